"""Alembic migrations of the results warehouse; run by resources.clients.warehouse."""
