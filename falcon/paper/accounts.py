"""Paper accounts: finding one by name, and creating one with its opening deposit."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from falcon import audit
from falcon.db.models import LedgerEntry, PaperAccount
from falcon.errors import NotFound, ValidationError
from falcon.paper.books import money, txn_id_for

__all__ = ["create_account", "find_account"]


def find_account(session: Session, name: str) -> PaperAccount:
    """The account called ``name`` (NotFound otherwise)."""
    account = session.scalar(select(PaperAccount).where(PaperAccount.name == name))
    if account is None:
        raise NotFound(f"no paper account {name!r} (create it: falcon paper account create)")
    return account


def create_account(
    session: Session, name: str, cash: float, *, long_only: bool = True, actor: str = "cli"
) -> PaperAccount:
    """A new account with ``cash`` deposited (ledger: cash / equity), audited."""
    if not name or len(name) > 64:
        raise ValidationError("account name must be 1 to 64 characters")
    if not cash > 0:
        raise ValidationError("starting cash must be > 0")
    if session.scalar(select(PaperAccount.id).where(PaperAccount.name == name)) is not None:
        raise ValidationError(f"paper account {name!r} already exists")
    amount = money(cash)
    account = PaperAccount(
        name=name,
        starting_cash=amount,
        cash=amount,
        long_only=long_only,
        halted=False,
        peak_equity=amount,
    )
    session.add(account)
    session.flush()
    txn = txn_id_for(f"deposit:{name}")
    session.add_all(
        [
            LedgerEntry(account_id=account.id, txn_id=txn, book="cash", amount=amount,
                        memo=f"deposit:{name}"),
            LedgerEntry(account_id=account.id, txn_id=txn, book="equity", amount=-amount,
                        memo=f"deposit:{name}"),
        ]
    )
    audit.append(session, actor, "paper.account_created", f"account:{name}",
                 {"cash": str(amount), "long_only": long_only})
    return account
