"""Pipeline parallelism: schedules as data, their simulation and formulas, and the strategy."""

from .config import Pipeline
from .schedules import Action, Schedule, make_schedule

__all__ = ["Action", "Pipeline", "Schedule", "make_schedule"]
