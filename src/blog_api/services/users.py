"""User accounts: registration, password changes, roles and deletion (one transaction each)."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from blog_api.auth.passwords import hash_password, needs_rehash, verify_password
from blog_api.errors import ConflictError
from blog_api.extensions import db
from blog_api.models import User
from blog_api.models.base import utcnow
from blog_api.models.users import new_security_stamp
from blog_api.services import confirmations, idempotency


def find_user_by_username(username: str) -> User | None:
    # No valid username holds a NUL byte, and PostgreSQL text cannot: querying would be a 500.
    if "\x00" in username:
        return None
    return db.session.scalar(select(User).where(func.lower(User.username) == username.lower()))


USERNAME_TAKEN = "Username already exists"
USERNAME_BATCH = 1000


def usernames() -> Iterator[tuple[int, str]]:
    """Every account's id and username in id order, fetched in batches however many there are."""
    yield from db.session.execute(
        select(User.id, User.username).order_by(User.id).execution_options(yield_per=USERNAME_BATCH)
    )


def create_user(
    username: str,
    password: str,
    email: str | None = None,
    role: str = "user",
    *,
    key: idempotency.Key | None = None,
) -> User:
    """Create an account; `ConflictError` when the username is taken (any case). With an
    Idempotency-Key (`key`), the transaction claims it first and stores its answer.

    An e-mail address is never a conflict: addresses are unique among confirmed accounts only,
    so that the answer cannot tell whether an address has an account. An account with an
    address gets its confirmation e-mail job in the same transaction.
    """
    email = email.lower() if email else None
    # Hashed before the transaction: on SQLite a keyed one holds the write lock from its start.
    password_hash = hash_password(password)
    with idempotency.once(key) as store_answer:
        # After the claim: a retry of a registration that succeeded is its replay, not a 409.
        if find_user_by_username(username) is not None:
            raise ConflictError(USERNAME_TAKEN)
        user = User(username=username, email=email, role=role, password_hash=password_hash)
        db.session.add(user)
        try:
            if email:
                db.session.flush()
                confirmations.add_confirmation(user)
            store_answer(user)
            # The confirmation's job and the key's answer commit with the user.
            db.session.commit()
        except IntegrityError:
            # Lost a race with a concurrent registration of the same name.
            raise ConflictError(USERNAME_TAKEN) from None
    return user


def authenticate(username: str, password: str) -> User | None:
    """The user when the credentials match, else None; costs the same either way."""
    user = find_user_by_username(username)
    if not verify_password(user.password_hash if user else None, password) or user is None:
        return None
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
        db.session.commit()
    return user


def change_password(user: User, new_password: str) -> None:
    """Store the new hash and draw a new security stamp, revoking every earlier token."""
    user.password_hash = hash_password(new_password)
    user.password_changed_at = utcnow()
    user.security_stamp = new_security_stamp()
    db.session.commit()


def set_role(user: User, role: str) -> None:
    user.role = role
    db.session.commit()


def delete_user(user: User) -> None:
    """Delete the account with its posts and to-dos; its tokens stop working at once."""
    db.session.delete(user)
    db.session.commit()
