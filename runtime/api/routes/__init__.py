"""The gateway's own routes, one module per resource: models, usage, health."""
