"""User accounts: registration, password changes, roles and deletion (one transaction each)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from blog_api.auth.passwords import hash_password, needs_rehash, verify_password
from blog_api.errors import ConflictError
from blog_api.extensions import db
from blog_api.models import User
from blog_api.models.base import utcnow
from blog_api.models.users import new_security_stamp
from blog_api.services import idempotency


def find_user_by_username(username: str) -> User | None:
    # No valid username holds a NUL byte, and PostgreSQL text cannot: querying would be a 500.
    if "\x00" in username:
        return None
    return db.session.scalar(select(User).where(func.lower(User.username) == username.lower()))


def _uniqueness_conflict(username: str, email: str | None) -> str | None:
    if find_user_by_username(username) is not None:
        return "Username already exists"
    if email is not None and db.session.scalar(select(User.id).where(User.email == email)):
        return "Email already exists"
    return None


def create_user(username: str, password: str, email: str | None = None, role: str = "user") -> User:
    """Create an account; `ConflictError` when the username or e-mail is taken (any case)."""
    email = email.lower() if email else None
    conflict = _uniqueness_conflict(username, email)
    if conflict:
        raise ConflictError(conflict)
    user = User(username=username, email=email, role=role, password_hash=hash_password(password))
    db.session.add(user)
    try:
        idempotency.commit_effect()
    except IntegrityError:
        # Lost a race with a concurrent registration of the same name or address.
        db.session.rollback()
        raise ConflictError(_uniqueness_conflict(username, email) or "User already exists")
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
