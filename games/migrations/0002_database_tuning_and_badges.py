"""Database-level behaviour the ORM cannot declare in Django 5.2, and the default badges.

- leaderboard entries get fillfactor 50: the hourly ranking rewrites `rank`, which no index holds,
  so with free space on each page PostgreSQL updates the rows in place (HOT) without index
  churn (FACTS.md: 0.3-0.4x of the time of the same UPDATE at the default fillfactor).
- entries.session_id gets ON DELETE SET NULL in the database, so cleanup's plain DELETE of old
  sessions needs no ORM collector (FACTS.md: 9.9 s vs 13.5 s for 1M sessions).
"""

from django.db import migrations

FK_SET_NULL = """
DO $$
DECLARE name text;
BEGIN
    SELECT conname INTO name FROM pg_constraint
    WHERE conrelid = 'games_leaderboardentry'::regclass
      AND confrelid = 'games_gamesession'::regclass AND contype = 'f';
    EXECUTE format('ALTER TABLE games_leaderboardentry DROP CONSTRAINT %I', name);
    EXECUTE format(
        'ALTER TABLE games_leaderboardentry ADD CONSTRAINT %I FOREIGN KEY (session_id) '
        'REFERENCES games_gamesession (id) ON DELETE SET NULL DEFERRABLE INITIALLY DEFERRED',
        name);
END $$;
"""

FK_NO_ACTION = FK_SET_NULL.replace("ON DELETE SET NULL ", "")

BADGES = [
    ("first-game", "First game", "Finished a first game.", "games_played", "", 1),
    ("regular", "Regular", "Finished 50 games.", "games_played", "", 50),
    ("veteran", "Veteran", "Finished 500 games.", "games_played", "", 500),
    ("snake-1000", "Snake charmer", "Scored 1,000 at Snake.", "score", "snake", 1000),
    ("tetris-10000", "Line clearer", "Scored 10,000 at Tetris.", "score", "tetris", 10000),
    ("pong-21", "Paddle master", "Scored 21 at Pong.", "score", "pong", 21),
    ("breakout-500", "Brick breaker", "Scored 500 at Breakout.", "score", "breakout", 500),
    (
        "invaders-5000",
        "Earth defender",
        "Scored 5,000 at Space Invaders.",
        "score",
        "space_invaders",
        5000,
    ),
    ("pool-winner", "Pool winner", "Won a prize pool.", "pools_won", "", 1),
]


def add_badges(apps, schema_editor):
    Badge = apps.get_model("games", "Badge")
    for code, name, description, rule, game, threshold in BADGES:
        Badge.objects.update_or_create(
            code=code,
            defaults={
                "name": name,
                "description": description,
                "rule": rule,
                "game": game,
                "threshold": threshold,
            },
        )


def remove_badges(apps, schema_editor):
    apps.get_model("games", "Badge").objects.filter(code__in=[b[0] for b in BADGES]).delete()


class Migration(migrations.Migration):
    dependencies = [("games", "0001_initial")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE games_leaderboardentry SET (fillfactor = 50)",
            "ALTER TABLE games_leaderboardentry RESET (fillfactor)",
        ),
        migrations.RunSQL(FK_SET_NULL, FK_NO_ACTION),
        migrations.RunPython(add_badges, remove_badges),
    ]
