"""Error types raised for user mistakes; main.py turns them into one-line messages."""


class NASError(Exception):
    """Base class of every error the toolkit raises on purpose (bad input, not a bug)."""


class ConfigError(NASError):
    """A configuration value is missing, unknown, mistyped or inconsistent."""


class UnknownComponentError(NASError):
    """A registry was asked for a name it does not hold."""


class RegistryError(NASError):
    """A component was registered twice or registered with an invalid object."""


class ArchitectureError(NASError):
    """An architecture does not fit the search space it is applied to."""


class DatasetError(NASError):
    """A dataset path or file is missing or malformed."""


class ScaffoldError(NASError):
    """build_interface.py cannot render the requested component."""


class ExportError(NASError):
    """A trained network cannot be exported (bad normalisation values, converter missing or failing)."""


class CheckpointError(NASError):
    """A checkpoint is missing, damaged, or does not belong to the run being resumed."""


class TrainingDivergedError(NASError):
    """Training produced a non-finite loss or gradient."""
