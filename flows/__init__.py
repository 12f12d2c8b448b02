"""Prefect flows: composition only. The flow table (every flow by name) is ``landing.flows.table``; importing
one flow does not import the others."""
