"""Board data files: one TOML file per board."""
