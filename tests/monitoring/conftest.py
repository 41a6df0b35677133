# The ledger and API fixtures these tests share with the interfaces' tests (tests/ops).
from tests.ops.conftest import _module_schedules, api, schedules, staff_token  # noqa: F401
