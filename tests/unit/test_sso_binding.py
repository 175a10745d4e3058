"""The cookie that binds an SSO login to its browser."""

from __future__ import annotations

from mfa_core.sso import binding


def test_new_browser_gets_new_value() -> None:
    first, first_bound = binding.bind([])
    second, second_bound = binding.bind([])

    assert first != second
    assert first_bound != second_bound
    assert binding.matches([f"{binding.COOKIE_NAME}={first}"], first_bound)
    assert not binding.matches([f"{binding.COOKIE_NAME}={second}"], first_bound)


def test_browser_with_cookie_keeps_its_value() -> None:
    value, _ = binding.bind([])
    cookies = ["theme=dark", f"{binding.COOKIE_NAME}={value}"]

    kept, bound_to = binding.bind(cookies)

    assert kept == value
    assert binding.matches(cookies, bound_to)


def test_malformed_cookie_is_replaced() -> None:
    cookies = [f"{binding.COOKIE_NAME}=chosen-by-an-attacker"]

    value, bound_to = binding.bind(cookies)

    assert value != "chosen-by-an-attacker"
    assert not binding.matches(cookies, bound_to)


def test_no_cookie_or_no_binding_never_matches() -> None:
    value, bound_to = binding.bind([])

    assert not binding.matches([], bound_to)
    assert not binding.matches([f"other={value}"], bound_to)
    assert not binding.matches([f"{binding.COOKIE_NAME}={value}"], None)
    assert not binding.matches([f"{binding.COOKIE_NAME}={value}"], "login:t_1")


def test_cookie_attributes() -> None:
    cookie = str(binding.set_cookie("v" * 43, max_age=600))

    assert cookie.startswith(f"{binding.COOKIE_NAME}={'v' * 43}")
    for attribute in ("Path=/", "Max-Age=600", "HttpOnly", "Secure", "SameSite=None"):
        assert attribute in cookie
