"""Let a bulk deleter skip the per-board marks of the delete trigger and mark boards itself.

Cleanup deletes entries of old boards by the hundred thousand; marking one entry of each of those
thousands of finished boards per batch cost ~40 % of its time at 1M sessions, for nothing (a
finished board is ranked in full by finalisation). A transaction that runs
`SET LOCAL games.skip_board_marks = 'on'` takes on the duty to mark the current boards it touched
(cleanup marks all current boards once at its end). Everyone else keeps the automatic marks.
"""

from django.db import migrations

BODY = """
CREATE OR REPLACE FUNCTION games_board_mark_after_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {skip}
    UPDATE games_leaderboardentry SET rank = NULL
    WHERE id IN (
        SELECT (SELECT e.id FROM games_leaderboardentry e
                WHERE e.game = d.game AND e.period = d.period AND e.period_start = d.period_start
                ORDER BY e.id LIMIT 1)
        FROM (SELECT DISTINCT game, period, period_start FROM deleted_entries) d
    ) AND rank IS NOT NULL;
    RETURN NULL;
END $$;
"""

SKIP = """IF current_setting('games.skip_board_marks', true) = 'on' THEN
        RETURN NULL;
    END IF;"""


class Migration(migrations.Migration):
    dependencies = [("games", "0004_cleanup_keyset_indexes")]

    operations = [migrations.RunSQL(BODY.format(skip=SKIP), BODY.format(skip=""))]
