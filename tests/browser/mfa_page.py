"""Steps on the reference web page, through the element ids that the page keeps stable."""

from __future__ import annotations

from dataclasses import dataclass

from playwright.sync_api import Locator, Page, expect

from tests.api.harness import Member


@dataclass(frozen=True)
class FactorRow:
    """One row of the page's factor table, as the user sees it."""

    factor_id: str
    type: str
    label: str
    status: str
    sign_count: str
    last_used: str
    clone_warning: bool


class MfaPage:
    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.url = url

    def open(self) -> None:
        self.page.goto(self.url)
        self.expect_view("signin")

    def expect_view(self, name: str) -> None:
        expect(self.page.locator("body")).to_have_attribute("data-view", name)

    @property
    def status(self) -> Locator:
        return self.page.locator("#status")

    def expect_status(self, text: str) -> None:
        expect(self.status).to_be_visible()
        expect(self.status).to_contain_text(text)

    def sign_in(self, member: Member) -> None:
        self.page.fill("#org-id", member.org_id)
        self.page.fill("#email", member.email)
        self.page.fill("#password", member.password)
        self.page.click("#signin-button")

    def sign_in_with_key(self, member: Member) -> None:
        self.sign_in(member)
        self.expect_view("mfa")
        self.page.click("#mfa-key-button")

    def log_out(self) -> None:
        self.page.click("#logout-button")
        self.expect_view("signin")
        self.expect_status("Logged out.")

    def register_key(self, label: str) -> None:
        self.page.fill("#key-label", label)
        self.page.click("#key-register-button")

    def factor_row(self, factor_id: str) -> Locator:
        return self.page.locator(f'#factors-body tr[data-factor-id="{factor_id}"]')

    def factor_rows(self) -> list[FactorRow]:
        rows = []
        for row in self.page.locator("#factors-body tr").all():
            rows.append(
                FactorRow(
                    factor_id=row.get_attribute("data-factor-id") or "",
                    type=row.get_attribute("data-type") or "",
                    label=row.locator(".factor-label").inner_text(),
                    status=row.locator(".factor-status").inner_text(),
                    sign_count=row.locator(".factor-sign-count").inner_text(),
                    last_used=row.locator(".factor-last-used").inner_text(),
                    clone_warning=row.locator(".clone-warning").count() > 0,
                )
            )
        return rows

    def only_factor(self) -> FactorRow:
        expect(self.page.locator("#factors-body tr")).to_have_count(1)
        rows = self.factor_rows()
        assert len(rows) == 1, rows
        return rows[0]
