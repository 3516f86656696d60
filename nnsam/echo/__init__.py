"""Echocardiography (CAMUS): dataset conversion, phantom data for tests, and temporal-consistency metrics."""
