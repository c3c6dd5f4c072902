"""The management API's routes, one module per resource, all under ``/admin/v1``."""
