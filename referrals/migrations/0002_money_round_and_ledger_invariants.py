"""Database-level rules the ORM cannot declare in Django 5.2.

- `referrals_money_round(numeric)`: the platform's one rounding rule (half-even to 0.01, see
  referrals.services.rewards) in SQL, so that set-based reward creation rounds exactly like
  Python's `Decimal.quantize(..., ROUND_HALF_EVEN)`. PostgreSQL's own `round()` rounds half away
  from zero. The function is a single IMMUTABLE SQL expression, which the planner inlines.
- The ledger balances: after every INSERT statement into ledger entries, each transaction it
  touched must sum to zero, or the statement fails (check_violation -> IntegrityError). So a
  transaction's entries are written by one statement. A statement-level trigger with a transition
  table costs one grouped query per statement, not one per row.
- The ledger is append-only: UPDATE and DELETE of entries and transactions are refused (TRUNCATE,
  used by test teardown, is not a row operation and stays allowed). A correction is a new,
  balancing transaction.
"""

from django.db import migrations

MONEY_ROUND = """
CREATE OR REPLACE FUNCTION referrals_money_round(x numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT sign(x) * CASE
        WHEN abs(x) * 100 - floor(abs(x) * 100) = 0.5 AND mod(floor(abs(x) * 100), 2) = 0
            THEN round(floor(abs(x) * 100) / 100, 2)
        ELSE round(abs(x), 2)
    END
$$;
"""

LEDGER_BALANCED = """
CREATE OR REPLACE FUNCTION referrals_ledger_check_balanced() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    unbalanced bigint;
BEGIN
    SELECT e.transaction_id INTO unbalanced
    FROM referrals_ledgerentry e
    WHERE e.transaction_id IN (SELECT DISTINCT n.transaction_id FROM new_entries n)
    GROUP BY e.transaction_id
    HAVING sum(e.amount) <> 0
    LIMIT 1;
    IF unbalanced IS NOT NULL THEN
        RAISE EXCEPTION 'ledger transaction % does not sum to zero', unbalanced
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER referrals_ledger_balanced
    AFTER INSERT ON referrals_ledgerentry
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION referrals_ledger_check_balanced();

CREATE OR REPLACE FUNCTION referrals_ledger_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER referrals_ledgerentry_append_only
    BEFORE UPDATE OR DELETE ON referrals_ledgerentry
    FOR EACH STATEMENT EXECUTE FUNCTION referrals_ledger_append_only();

CREATE TRIGGER referrals_ledgertransaction_append_only
    BEFORE UPDATE OR DELETE ON referrals_ledgertransaction
    FOR EACH STATEMENT EXECUTE FUNCTION referrals_ledger_append_only();
"""

LEDGER_BALANCED_REVERSE = """
DROP TRIGGER IF EXISTS referrals_ledgertransaction_append_only ON referrals_ledgertransaction;
DROP TRIGGER IF EXISTS referrals_ledgerentry_append_only ON referrals_ledgerentry;
DROP FUNCTION IF EXISTS referrals_ledger_append_only();
DROP TRIGGER IF EXISTS referrals_ledger_balanced ON referrals_ledgerentry;
DROP FUNCTION IF EXISTS referrals_ledger_check_balanced();
"""


class Migration(migrations.Migration):
    dependencies = [("referrals", "0001_initial")]

    operations = [
        migrations.RunSQL(MONEY_ROUND, "DROP FUNCTION IF EXISTS referrals_money_round(numeric)"),
        migrations.RunSQL(LEDGER_BALANCED, LEDGER_BALANCED_REVERSE),
    ]
