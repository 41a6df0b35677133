"""A bulk deleter that skips the per-board marks still marks the boards of open pools.

Finalisation ranks a board only if it changed since its last ranking (an entry with rank NULL).
Cleanup deletes entries with `games.skip_board_marks = 'on'` and marks only the current boards
at its end; a board whose period ended but whose pool is still open (finalisation late or
catching up) would then lose entries without a mark, and finalisation would keep its old ranks
with a gap. The trigger now marks, even when skipping, the boards among the deleted entries' that
have an open pool: a probe of the pool's unique key per board, so the thousands of old boards of
a cleanup batch (closed pools, or none) still cost nothing.
"""

from django.db import migrations

MARK = """
    UPDATE games_leaderboardentry SET rank = NULL
    WHERE id IN (
        SELECT (SELECT e.id FROM games_leaderboardentry e
                WHERE e.game = d.game AND e.period = d.period AND e.period_start = d.period_start
                ORDER BY e.id LIMIT 1)
        FROM (SELECT DISTINCT game, period, period_start FROM deleted_entries) d
        {only_open}
    ) AND rank IS NOT NULL;"""

ONLY_OPEN = """WHERE EXISTS (SELECT 1 FROM games_prizepool p
                     WHERE p.game = d.game AND p.period = d.period
                       AND p.period_start = d.period_start AND p.status = 'open')"""

FORWARD = f"""
CREATE OR REPLACE FUNCTION games_board_mark_after_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('games.skip_board_marks', true) = 'on' THEN
        {MARK.format(only_open=ONLY_OPEN)}
        RETURN NULL;
    END IF;
    {MARK.format(only_open="")}
    RETURN NULL;
END $$;
"""

BACKWARD = f"""
CREATE OR REPLACE FUNCTION games_board_mark_after_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('games.skip_board_marks', true) = 'on' THEN
        RETURN NULL;
    END IF;
    {MARK.format(only_open="")}
    RETURN NULL;
END $$;
"""


class Migration(migrations.Migration):
    dependencies = [("games", "0005_board_marks_can_be_deferred")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
