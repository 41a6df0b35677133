"""Mark a board for re-ranking whenever it changes, in the database, so no writer can forget.

A board needs ranking iff one of its entries has rank NULL:
- a new entry starts unranked (BEFORE INSERT sets rank NULL);
- a changed score or achieved_at makes that entry unranked (BEFORE UPDATE, only when they change;
  the ranking's own UPDATE of `rank` does not fire it);
- a deleted entry leaves a gap: an AFTER DELETE statement trigger sets rank NULL on one remaining
  entry (the lowest id) of each board it touched.
leaderboard-ranking then windows only those boards; the others are not read for sorting nor
written. No index contains `rank`, so ranking updates stay HOT.
"""

from django.db import migrations

FORWARD = """
CREATE FUNCTION games_entry_unrank() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.rank := NULL;
    RETURN NEW;
END $$;

CREATE TRIGGER games_entry_unrank_insert BEFORE INSERT ON games_leaderboardentry
    FOR EACH ROW EXECUTE FUNCTION games_entry_unrank();

CREATE TRIGGER games_entry_unrank_update BEFORE UPDATE OF score, achieved_at
    ON games_leaderboardentry FOR EACH ROW
    WHEN (OLD.score IS DISTINCT FROM NEW.score OR OLD.achieved_at IS DISTINCT FROM NEW.achieved_at)
    EXECUTE FUNCTION games_entry_unrank();

CREATE FUNCTION games_board_mark_after_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE games_leaderboardentry SET rank = NULL
    WHERE id IN (
        SELECT (SELECT e.id FROM games_leaderboardentry e
                WHERE e.game = d.game AND e.period = d.period AND e.period_start = d.period_start
                ORDER BY e.id LIMIT 1)
        FROM (SELECT DISTINCT game, period, period_start FROM deleted_entries) d
    ) AND rank IS NOT NULL;
    RETURN NULL;
END $$;

CREATE TRIGGER games_board_mark_after_delete AFTER DELETE ON games_leaderboardentry
    REFERENCING OLD TABLE AS deleted_entries
    FOR EACH STATEMENT EXECUTE FUNCTION games_board_mark_after_delete();
"""

BACKWARD = """
DROP TRIGGER games_board_mark_after_delete ON games_leaderboardentry;
DROP FUNCTION games_board_mark_after_delete();
DROP TRIGGER games_entry_unrank_update ON games_leaderboardentry;
DROP TRIGGER games_entry_unrank_insert ON games_leaderboardentry;
DROP FUNCTION games_entry_unrank();
"""


class Migration(migrations.Migration):
    dependencies = [("games", "0002_database_tuning_and_badges")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
