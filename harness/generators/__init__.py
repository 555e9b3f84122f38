"""Token generators (issue 5): each module registers its presets in harness.registry.GENERATORS."""
