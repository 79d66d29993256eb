"""fraudstream's HTTP service for analysts and integrators."""
