"""The request log: every request the gateway served, with its orchestration trace, for operators.

``writer`` buffers what the telemetry hands it when each request ends and
writes it in batches off the event loop; ``store`` reads and purges it; the
management API serves it under ``/admin/v1/requests`` and the console's
Requests page shows it.
"""
