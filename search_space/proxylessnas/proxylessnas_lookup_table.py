"""ProxylessNAS lookup table: FLOPs/params of every candidate counted from its nnabla graph."""

from typing import Dict, List, Sequence, Tuple

from search_space.base_lookup_table import BaseLookUpTable


class ProxylessNASLookUpTable(BaseLookUpTable):
    """Per layer x candidate counts plus the fixed first/last-stage cost."""

    def construct_info_table(
        self, metrics: Sequence[str]
    ) -> Tuple[Dict[str, Dict[str, List[float]]], Dict[str, float]]:
        return self.count_search_stage(metrics), self.count_fixed_stages(metrics)
