"""Prefect flows by the name a run config's ``flow:`` key uses."""

from landing.flows.augment import augment
from landing.flows.compress import compress
from landing.flows.distill import distill
from landing.flows.fewshot import fewshot
from landing.flows.metakd import metakd
from landing.flows.promote import promote

FLOWS = {"augment": augment, "distill": distill, "compress": compress, "promote": promote, "fewshot": fewshot, "metakd": metakd}
