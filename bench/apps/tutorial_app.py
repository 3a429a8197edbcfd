"""Reference app 2: the tutorial chapter's way of doing it, as close to its code as runs.

Flask-SQLAlchemy models, a PyJWT `login_required` that loads the user from the database on every
request, marshmallow schemas, the chapter's logging set-up (console at DEBUG plus a 10 kB rotating
`app.log`), and `db.session.commit()` followed by `send_email_notification.delay(...)` with the
chapter's Redis broker *and* Redis result backend. Deviations, so that it can be driven by the
same scenarios: the listing honours `?limit=`/`?offset=` (the chapter returns every post), the
password hash is werkzeug's (the chapter uses flask-bcrypt, not installed here), and the tables
are created by `python tutorial_app.py init` instead of at import (two workers would race).

The fair variant (BENCH_MAIL_PORT set): the chapter's own note says real apps send the e-mail with
`smtplib` instead of sleeping, so its task does that, as a reader of the chapter would write it:
it loads the user, builds the notification our worker sends (subject, sender, recipient, body)
and sends it on a new SMTP connection to the sink on that port. Everything else is the same app.

Settings come from the environment: BENCH_DATABASE_URL, BENCH_REDIS_URL, BENCH_QUEUE,
BENCH_MAIL_PORT.
"""

import datetime
import logging
import os
import smtplib
import sys
import time
from email.mime.text import MIMEText
from functools import wraps
from logging.handlers import RotatingFileHandler

import jwt
from celery import Celery
from flask import Flask, abort, g, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from marshmallow import Schema, fields
from werkzeug.security import check_password_hash, generate_password_hash

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://localhost:6379/0")
MAIL_PORT = int(os.environ.get("BENCH_MAIL_PORT") or 0)
MAIL_SENDER = "Blog API <noreply@blog-api.local>"

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["BENCH_DATABASE_URL"]
app.config["SECRET_KEY"] = os.environ.get("BENCH_SECRET", "tutorial-secret-key-for-the-bench")
db = SQLAlchemy(app)


def make_celery(flask_app: Flask) -> Celery:
    celery = Celery(flask_app.import_name, backend=REDIS_URL, broker=REDIS_URL)
    celery.conf.update(task_default_queue=os.environ.get("BENCH_QUEUE", "celery"))
    return celery


celery = make_celery(app)


def setup_logging(flask_app: Flask) -> None:
    if not flask_app.debug:
        handler = RotatingFileHandler("app.log", maxBytes=10000, backupCount=3)
        handler.setLevel(logging.INFO)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s: %(message)s [in %(pathname)s:%(lineno)d]")
        )
        flask_app.logger.addHandler(handler)
    console_handler = logging.StreamHandler()
    console_handler.setLevel(logging.DEBUG)
    console_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s: %(message)s"))
    flask_app.logger.addHandler(console_handler)
    flask_app.logger.setLevel(logging.DEBUG)


setup_logging(app)


class User(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    username = db.Column(db.String(80), unique=True, nullable=False)
    password = db.Column(db.String(255), nullable=False)
    email = db.Column(db.String(120))
    is_admin = db.Column(db.Boolean, default=False)


class Post(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    title = db.Column(db.String(200), nullable=False)
    content = db.Column(db.Text, nullable=False)
    user_id = db.Column(db.Integer, db.ForeignKey("user.id"), nullable=False)
    created_at = db.Column(db.DateTime, default=datetime.datetime.utcnow)


class PostSchema(Schema):
    id = fields.Integer()
    title = fields.String()
    content = fields.String()
    user_id = fields.Integer()
    created_at = fields.DateTime()


post_schema = PostSchema()
posts_schema = PostSchema(many=True)


def send_with_smtplib(user_id, post_title):
    with app.app_context():
        user = db.session.get(User, user_id)
    message = MIMEText(
        f"Hello {user.username},\n\nyour post '{post_title}' has been published on Blog API.\n"
    )
    message["Subject"] = f"Your post '{post_title}' is published"
    message["From"] = MAIL_SENDER
    message["To"] = user.email
    with smtplib.SMTP("127.0.0.1", MAIL_PORT, timeout=10) as smtp:
        smtp.send_message(message)


@celery.task
def send_email_notification(user_id, post_title):
    if MAIL_PORT:
        send_with_smtplib(user_id, post_title)
    else:
        time.sleep(5)
    print(f"Email sent to user {user_id} for post '{post_title}'")
    return f"Notification for {post_title} completed"


def login_required(f):
    @wraps(f)
    def decorated_function(*args, **kwargs):
        token = request.headers.get("Authorization")
        if not token:
            abort(401, description="Missing token")
        try:
            if token.startswith("Bearer "):
                token = token[7:]
            data = jwt.decode(token, app.config["SECRET_KEY"], algorithms=["HS256"])
            user = db.session.get(User, data["user_id"])
            if not user:
                abort(401, description="Invalid token")
            g.current_user = user
        except jwt.ExpiredSignatureError:
            abort(401, description="Token has expired")
        except jwt.InvalidTokenError:
            abort(401, description="Invalid token")
        return f(*args, **kwargs)

    return decorated_function


@app.errorhandler(404)
def not_found(error):
    app.logger.error(f"404 error: {error!s}")
    return jsonify({"error": "Not Found", "message": str(error)}), 404


@app.errorhandler(400)
def bad_request(error):
    app.logger.warning(f"400 error: {error!s}")
    return jsonify({"error": "Bad Request", "message": str(error)}), 400


@app.errorhandler(500)
def internal_error(error):
    app.logger.critical(f"500 error: {error!s}")
    return jsonify({"error": "Internal Server Error", "message": "Something went wrong"}), 500


@app.route("/api/v1/users", methods=["POST"])
def create_user():
    data = request.get_json()
    user = User(
        username=data["username"],
        password=generate_password_hash(data["password"]),
        email=data.get("email"),
    )
    db.session.add(user)
    db.session.commit()
    return jsonify({"id": user.id, "username": user.username}), 201


@app.route("/api/v1/login", methods=["POST"])
def login():
    data = request.get_json()
    user = User.query.filter_by(username=data["username"]).first()
    if not user or not check_password_hash(user.password, data["password"]):
        abort(401, description="Invalid credentials")
    token = jwt.encode(
        {
            "user_id": user.id,
            "exp": datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1),
        },
        app.config["SECRET_KEY"],
        algorithm="HS256",
    )
    return jsonify({"token": token})


@app.route("/api/v1/posts", methods=["GET"])
def get_posts():
    query = Post.query.order_by(Post.id)
    user_id = request.args.get("user_id", type=int)
    if user_id:
        query = query.filter_by(user_id=user_id)
    limit = request.args.get("limit", type=int)
    if limit:
        query = query.offset(request.args.get("offset", 0, type=int)).limit(limit)
    posts = query.all()
    app.logger.debug("Fetched posts")
    return jsonify({"posts": posts_schema.dump(posts)})


@app.route("/api/v1/posts/<int:post_id>", methods=["GET"])
def get_post(post_id):
    post = db.get_or_404(Post, post_id, description="Post not found")
    return jsonify(post_schema.dump(post))


@app.route("/api/v1/posts", methods=["POST"])
@login_required
def create_post():
    if not request.is_json:
        abort(400, description="Request must be JSON")
    data = request.get_json()
    if "title" not in data or "content" not in data:
        abort(400, description="Missing title or content")
    post = Post(title=data["title"], content=data["content"], user_id=g.current_user.id)
    db.session.add(post)
    db.session.commit()
    app.logger.info(f"Post created: {post.title} by {g.current_user.username}")
    send_email_notification.delay(g.current_user.id, post.title)
    app.logger.info(f"Queued email notification for {post.title}")
    return jsonify(post_schema.dump(post)), 201


if __name__ == "__main__" and sys.argv[1:] == ["init"]:
    with app.app_context():
        db.create_all()
