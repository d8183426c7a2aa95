"""The registries of every component kind; each fills itself by importing its package on first use."""

from core.registry import Registry

SEARCH_SPACES: Registry = Registry("search space", package="search_space")
BLOCKS: Registry = Registry("block", package="search_space.blocks")
SEARCH_STRATEGIES: Registry = Registry("search strategy", package="search_strategy")
TRAINING_STRATEGIES: Registry = Registry("training strategy", package="training_strategy")
CRITERIA: Registry = Registry("criterion", package="criterion")
DATASETS: Registry = Registry("dataset", package="dataset")
AGENTS: Registry = Registry("agent", package="agent")

#: config section name -> (agent key naming the component, registry)
COMPONENT_SECTIONS = {
    "search_space": ("search_space_agent", SEARCH_SPACES),
    "training_strategy": ("training_strategy_agent", TRAINING_STRATEGIES),
    "search_strategy": ("search_strategy_agent", SEARCH_STRATEGIES),
    "criterion": ("criterion_agent", CRITERIA),
    "dataset": ("dataset_agent", DATASETS),
}
