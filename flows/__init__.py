"""Prefect flows by the name a run config's ``flow:`` key uses."""

from flows.compress import compress
from flows.distill import distill
from flows.promote import promote

FLOWS = {"distill": distill, "compress": compress, "promote": promote}
