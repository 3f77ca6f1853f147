"""Declarative automation of the downstream assets (scores, evaluations, reports).

`REFRESH` (Dagster's eager condition): an asset is requested when one of its upstream assets (or
partitions) was materialized since the asset last was, once none of them is missing or in
progress; with nothing new upstream nothing is requested, so a second evaluation does no work.
Training assets have no condition: retraining is requested by a person, the weekly schedule or
the score-regression sensor. The conditions run once the `default_automation_condition_sensor`
is switched on (Automation page of the UI, or `dagster sensor start
default_automation_condition_sensor`); it is off by default.
"""

import dagster as dg

REFRESH = dg.AutomationCondition.eager()
