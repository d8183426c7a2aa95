"""ProxylessNAS lookup table: every candidate counted (FLOPs, params) or measured (latency, memory) in place."""

from typing import Dict, List, Sequence, Tuple

from search_space.base_lookup_table import BaseLookUpTable


class ProxylessNASLookUpTable(BaseLookUpTable):
    """Per layer x candidate counts plus the fixed first/last-stage cost."""

    def construct_info_table(
        self, metrics: Sequence[str]
    ) -> Tuple[Dict[str, Dict[str, List[float]]], Dict[str, float]]:
        return self.measure_search_stage(metrics), self.measure_fixed_stages(metrics)
