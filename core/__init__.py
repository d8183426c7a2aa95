"""Framework-level services shared by every component: registries, config, errors, run I/O."""
