from games.checks import games_settings_check


def test_a_bad_setting_is_a_system_check_error_naming_its_variable(monkeypatch):
    monkeypatch.setenv("SESSION_EXPIRY_MINUTES", "thirty")
    errors = games_settings_check()
    assert [e.id for e in errors] == ["games.E001"]
    assert "SESSION_EXPIRY_MINUTES" in errors[0].msg


def test_an_out_of_range_share_is_refused(monkeypatch):
    monkeypatch.setenv("GAMES_DAILY_POOL_SHARE", "101")
    assert "GAMES_DAILY_POOL_SHARE" in games_settings_check()[0].msg


def test_the_defaults_pass():
    assert games_settings_check() == []
