#!/usr/bin/env python
"""Local test stack for runbook.deploy: private PostgreSQL, Redis, moto (S3/CloudFront), PM2 and Unleash.

    .venv/bin/python tests/stack/stack.py start [--only postgres,redis,moto,pm2,unleash]
    .venv/bin/python tests/stack/stack.py status
    .venv/bin/python tests/stack/stack.py env
    .venv/bin/python tests/stack/stack.py stop [--only ...] [--purge]

Everything listens on 127.0.0.1 on free ports and lives in the state dir (<repo>/.stack, or $RUNBOOK_STACK_DIR).
`start` is idempotent and recovers from a killed previous run; `stop` stops only what the pid files name, after
checking /proc/<pid>/cmdline (and environ) so a recycled pid is never signalled. Stdlib only.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("RUNBOOK_STACK_DIR") or REPO / ".stack").resolve()
HOST = "127.0.0.1"
ORDER = ["postgres", "redis", "moto", "pm2", "unleash", "smtp"]
PG_BINDIR = Path(os.environ.get("RUNBOOK_PG_BINDIR") or "/usr/lib/postgresql/15/bin")
PM2_BIN = REPO / "node_modules" / ".bin" / "pm2"


class StackError(Exception):
    pass


# ---------------------------------------------------------------- common helpers


def log(msg: str) -> None:
    print(msg, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_is_free(port: int | None) -> bool:
    if not port:
        return False
    with socket.socket() as s:
        # like the servers themselves: TIME_WAIT leftovers of a killed server do not make a port busy
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def pick_port(recorded: int | None) -> int:
    """Reuse the recorded port when it is still free (stable URLs), else take a new one."""
    return recorded if port_is_free(recorded) else free_port()


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def proc_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def proc_alive(pid: int | None) -> bool:
    """Alive and not a zombie."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def proc_matches(pid: int | None, *needles: str, marker: str | None = None) -> bool:
    """pid is alive, its cmdline contains every needle and (optionally) its environ holds `marker`."""
    if not proc_alive(pid):
        return False
    cmd = proc_cmdline(pid)
    if not all(n in cmd for n in needles):
        return False
    if marker:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        if marker.encode() not in env:
            return False
    return True


def wait_gone(pid: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not proc_alive(pid):
            return True
        time.sleep(0.1)
    return not proc_alive(pid)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_for(what: str, check, timeout: float, logfile: Path, proc: subprocess.Popen | None = None) -> None:
    """Poll check() until true; on timeout or early exit of proc, raise with the log's tail."""
    end = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - any failure just means "not yet"
            pass
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what} exited with code {proc.returncode}; tail of {logfile}:\n{tail(logfile)}")
        if time.monotonic() > end:
            raise StackError(f"{what} did not answer within {timeout:.0f}s; tail of {logfile}:\n{tail(logfile)}")
        time.sleep(0.2)


def http_status(url: str, headers: dict | None = None, timeout: float = 2.0) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def run(cmd: list, what: str, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("stdin", subprocess.DEVNULL)
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if res.returncode != 0:
        raise StackError(f"{what} failed ({res.returncode}): {' '.join(map(str, cmd))}\n{res.stdout}{res.stderr}")
    return res


def marker(service: str) -> str:
    """Put into the environment of each process we spawn; checked in /proc/<pid>/environ."""
    return f"RUNBOOK_STACK_SERVICE={STATE}/{service}"


def child_env(service: str, **extra) -> dict:
    env = dict(os.environ)
    env.update(dict([marker(service).split("=", 1)]))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def write_private(path: Path, text: str) -> None:
    """Atomically write a 0600 file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def secret_file(path: Path, nbytes: int = 24) -> str:
    """Read a generated secret, creating it (0600) on first use."""
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    value = secrets.token_hex(nbytes)
    write_private(path, value + "\n")
    return value


def kill_group(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by pid (we created it with a new session), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        if wait_gone(pid, timeout):
            # leader gone: make sure nothing else is left in its group
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return


# ---------------------------------------------------------------- services


class Service:
    """One service. `record` is its persistent entry in stack.json (port, secrets...)."""

    name = ""
    dirname = ""  # under the state dir; default: name
    timeout = 30.0  # seconds to wait for it to answer

    def __init__(self, record: dict):
        self.record = record
        self.dir = STATE / (self.dirname or self.name)
        self.log = self.dir / f"{self.name}.log"
        self.pidfile = self.dir / f"{self.name}.pid"

    # -- to implement
    def pid(self) -> int | None:  # our live process, identity checked, or None
        raise NotImplementedError

    def answers(self) -> bool:
        raise NotImplementedError

    def launch(self) -> None:  # start (may return before the service answers)
        raise NotImplementedError

    def wait(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def env(self) -> dict:
        raise NotImplementedError

    # -- shared
    def running(self) -> bool:
        try:
            return self.pid() is not None and self.answers()
        except Exception:  # noqa: BLE001
            return False

    def start(self) -> str:
        """Leave a healthy instance alone; restart a live-but-dead one; clean stale state; launch."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.pid() is not None:
            try:
                wait_for(self.name, self.answers, self.timeout, self.log)
                return "already running"
            except StackError:
                log(f"{self.name}: pid {self.pid()} does not answer, restarting it")
                self.stop()
        self.cleanup_stale()
        self.launch()
        return "started"

    def cleanup_stale(self) -> None:
        self.pidfile.unlink(missing_ok=True)


class Postgres(Service):
    name = "postgres"
    dirname = "pg"

    def __init__(self, record):
        super().__init__(record)
        self.data = self.dir / "data"
        self.run_dir = self.dir / "run"
        self.pwfile = self.dir / "superuser.pw"
        self.marker = self.dir / "initialized"
        self.log = self.dir / "postgres.log"

    def as_postgres(self, *cmd, what: str, **kw):
        cmd = ["runuser", "-u", "postgres", "--", *map(str, cmd)]
        return run(cmd, what, cwd=self.dir, env=child_env(self.name), **kw)

    def lockfile(self) -> list[str]:
        try:
            return (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return []

    def pid(self):
        lines = self.lockfile()
        pid = int(lines[0]) if lines and lines[0].isdigit() else None
        return pid if proc_matches(pid, "postgres", str(self.data)) else None

    @property
    def port(self) -> int | None:
        lines = self.lockfile()  # the running server's port is the truth, then the record
        if self.pid() and len(lines) > 3 and lines[3].isdigit():
            return int(lines[3])
        return self.record.get("port")

    def answers(self):
        res = subprocess.run([PG_BINDIR / "pg_isready", "-q", "-h", HOST, "-p", str(self.port), "-t", "2"],
                             stdin=subprocess.DEVNULL, capture_output=True, check=False)
        return res.returncode == 0

    def password(self) -> str:
        return self.pwfile.read_text().strip()

    def ensure_dirs(self):
        for d in (STATE, self.dir):
            d.mkdir(parents=True, exist_ok=True)
        if subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(STATE)],
                          stdin=subprocess.DEVNULL, check=False).returncode != 0:
            raise StackError(f"user postgres cannot reach {STATE}: make it and its parents traversable (o+x)")
        self.run_dir.mkdir(exist_ok=True)
        shutil.chown(self.dir, "postgres", "postgres")
        shutil.chown(self.run_dir, "postgres", "postgres")
        os.chmod(self.dir, 0o711)
        os.chmod(self.run_dir, 0o755)

    def orphans(self) -> list[int]:
        """Processes working in our pg dir: backends of a killed postmaster (their cwd is the data dir)
        or an initdb whose caller was killed (we run it with cwd = pg dir)."""
        found = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    cwd = os.readlink(p / "cwd")
                except OSError:
                    continue
                if cwd == str(self.dir) or cwd.startswith(f"{self.dir}/"):
                    found.append(int(p.name))
        return found

    def wait_orphans(self, timeout: float = 20):
        end = time.monotonic() + timeout
        while self.orphans() and time.monotonic() < end:
            time.sleep(0.2)
        if self.orphans():
            raise StackError(f"processes {self.orphans()} from a previous run still work in {self.dir}")

    def cleanup_stale(self):
        # A killed postmaster leaves postmaster.pid, socket locks and, for a moment, its children.
        self.wait_orphans()
        (self.data / "postmaster.pid").unlink(missing_ok=True)
        for f in self.run_dir.glob(".s.PGSQL.*"):
            f.unlink()

    def initdb(self):
        if self.data.exists() and (self.marker.exists() and (self.data / "PG_VERSION").exists()):
            return
        self.wait_orphans()
        if self.data.exists():
            log("postgres: half-initialised data dir, wiping it")
            shutil.rmtree(self.data)
        self.marker.unlink(missing_ok=True)
        pw = secrets.token_hex(24)
        write_private(self.pwfile, pw + "\n")
        shutil.chown(self.pwfile, "postgres", "postgres")
        self.as_postgres(PG_BINDIR / "initdb", "-D", self.data, "-U", "postgres", f"--pwfile={self.pwfile}",
                         "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C.UTF-8",
                         "--no-sync", "--no-instructions", what="initdb")
        self.marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))

    def start(self):
        self.ensure_dirs()
        if self.pid() is None:  # never touch the data dir of a running server
            self.initdb()
        return super().start()

    def launch(self):
        port = pick_port(self.record.get("port"))
        opts = (f"-p {port} -c listen_addresses={HOST} -c unix_socket_directories={self.run_dir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        try:
            self.as_postgres(PG_BINDIR / "pg_ctl", "-D", self.data, "-l", self.log, "-o", opts,
                             "-w", "-t", "60", "start", what="pg_ctl start", timeout=90)
        except StackError as e:
            raise StackError(f"{e}\ntail of {self.log}:\n{tail(self.log)}") from None
        self.record["port"] = port

    def psql(self, sql: str, db: str = "postgres") -> str:
        return run([PG_BINDIR / "psql", "-X", "-h", self.run_dir, "-p", str(self.port), "-U", "postgres",
                    "-d", db, "-tAc", sql], "psql", env=child_env(self.name)).stdout.strip()

    def wait(self):
        wait_for("postgres", self.answers, self.timeout, self.log)
        if self.psql("SELECT 1 FROM pg_database WHERE datname = 'unleash'") != "1":
            self.psql("CREATE DATABASE unleash")
        self.record["port"] = self.port

    def stop(self):
        if self.pid() is not None:
            self.as_postgres(PG_BINDIR / "pg_ctl", "-D", self.data, "stop", "-m", "fast", "-w", "-t", "60",
                             what="pg_ctl stop", timeout=90)

    def env(self):
        return {
            "RUNBOOK_PG_HOST": HOST,
            "RUNBOOK_PG_PORT": self.port,
            "RUNBOOK_PG_USER": "postgres",
            "RUNBOOK_PG_PASSWORD": self.password(),
            "RUNBOOK_PG_SOCKET_DIR": self.run_dir,
            "RUNBOOK_PG_BINDIR": PG_BINDIR,
            "RUNBOOK_PG_DATA": self.data,
        }


class Redis(Service):
    name = "redis"

    @property
    def conf(self) -> Path:
        return self.dir / "redis.conf"

    @property
    def port(self):
        if not self.record.get("port") and self.conf.exists():  # stack.json lost: the config knows
            lines = [ln.split() for ln in self.conf.read_text().splitlines()]
            self.record["port"] = next((int(w[1]) for w in lines if len(w) == 2 and w[0] == "port"), None)
        return self.record.get("port")

    def pid(self):
        # redis-server overwrites its environ with the process title, so the title carries our config path
        pid = read_pid(self.pidfile)
        return pid if proc_matches(pid, "redis-server", str(self.conf)) else None

    def answers(self):
        with socket.create_connection((HOST, self.port), timeout=2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")

    def server_bin(self) -> str:
        found = shutil.which("redis-server")
        if found:
            return found
        log("redis: redis-server missing, installing it with apt-get")
        cmd = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", "redis-server"]
        env = child_env(self.name, DEBIAN_FRONTEND="noninteractive")
        if subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=False).returncode != 0:
            run(["apt-get", "update", "-q", "-o", "DPkg::Lock::Timeout=300"], "apt-get update", env=env)
            run(cmd, "apt-get install redis-server", env=env)
        found = shutil.which("redis-server")
        if not found:
            raise StackError("redis-server is still missing after apt-get install")
        return found

    def launch(self):
        binary = self.server_bin()
        port = pick_port(self.port)
        self.conf.write_text(
            f"bind {HOST}\nport {port}\nprotected-mode yes\ndaemonize yes\n"
            f"pidfile {self.pidfile}\nlogfile {self.log}\ndir {self.dir}\n"
            'save ""\nappendonly no\n'
            f'proc-title-template "{{title}} {{listen-addr}} {{config-file}}"\n'
        )
        run([binary, self.conf], "redis-server", env=child_env(self.name), cwd=self.dir)
        self.record["port"] = port

    def wait(self):
        wait_for("redis", lambda: self.pid() is not None and self.answers(), self.timeout, self.log)

    def stop(self):
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            if not wait_gone(pid, 10):
                os.kill(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)

    def env(self):
        return {"RUNBOOK_REDIS_URL": f"redis://{HOST}:{self.port}/0", "RUNBOOK_REDIS_PORT": self.port}


class Background(Service):
    """A foreground program we daemonise ourselves: new session, log file, pid file."""

    needle = ""  # expected in /proc/<pid>/cmdline

    @property
    def port(self):
        return self.record.get("port")

    def pid(self):
        pid = read_pid(self.pidfile)
        try:  # we made it a session (and group) leader
            if proc_matches(pid, self.needle, marker=marker(self.name)) and os.getpgid(pid) == pid:
                return pid
        except ProcessLookupError:
            pass
        return None

    def wait(self):
        wait_for(self.name, self.answers, self.timeout, self.log, getattr(self, "proc", None))

    def spawn(self, cmd: list, env: dict) -> None:
        with open(self.log, "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
            out.flush()
            self.proc = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=REPO)
        write_private(self.pidfile, f"{self.proc.pid}\n")

    def stop(self):
        pid = self.pid()
        if pid is not None:
            kill_group(pid)
        self.pidfile.unlink(missing_ok=True)


class Moto(Background):
    name = "moto"
    needle = "moto_server"
    timeout = 60.0

    def answers(self):
        return http_status(f"http://{HOST}:{self.port}/moto-api/") in (200, 403)

    def launch(self):
        binary = Path(sys.prefix) / "bin" / "moto_server"
        if not binary.exists():
            binary = REPO / ".venv" / "bin" / "moto_server"
        if not binary.exists():
            raise StackError(f"moto_server not found (looked in {sys.prefix}/bin and {REPO}/.venv/bin)")
        self.record["port"] = pick_port(self.port)
        self.spawn([binary, "-H", HOST, "-p", self.port],
                   child_env(self.name, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                             AWS_DEFAULT_REGION="us-east-1"))

    def env(self):
        return {
            "RUNBOOK_S3_ENDPOINT_URL": f"http://{HOST}:{self.port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }


class Unleash(Background):
    name = "unleash"
    needle = "unleash.js"
    timeout = 240.0  # first start runs all the schema migrations

    def __init__(self, record, pg: Postgres):
        super().__init__(record)
        self.pg = pg
        self.tokenfile = self.dir / "admin.token"
        self.pwfile = self.dir / "admin.password"  # UI login "admin" (only used when the DB is new)

    def token(self) -> str:
        if not self.tokenfile.exists():
            # Unleash creates init tokens only into an empty token table: reuse one it already has.
            try:
                old = self.pg.psql("SELECT secret FROM api_tokens WHERE token_name = 'ci' AND type = 'admin' "
                                   "ORDER BY created_at LIMIT 1", db="unleash")
            except StackError:
                old = ""
            write_private(self.tokenfile, (old or f"*:*.{secrets.token_hex(24)}") + "\n")
        return self.tokenfile.read_text().strip()

    def answers(self):
        base = f"http://{HOST}:{self.port}"
        return (http_status(f"{base}/health") == 200
                and http_status(f"{base}/api/admin/projects", {"Authorization": self.token()}) == 200)

    def launch(self):
        if not self.pg.running():
            raise StackError("unleash needs postgres: start it too (--only postgres,unleash)")
        node = shutil.which("node")
        if not node:
            raise StackError("node not found on PATH")
        if not (REPO / "node_modules" / "unleash-server").is_dir():
            raise StackError(f"unleash-server missing in {REPO}/node_modules (run npm install)")
        self.record["port"] = pick_port(self.port)
        env = child_env(
            self.name, RUNBOOK_PG_HOST=HOST, RUNBOOK_PG_PORT=self.pg.port, RUNBOOK_PG_USER="postgres",
            RUNBOOK_PG_PASSWORD=self.pg.password(), RUNBOOK_UNLEASH_PORT=self.port,
            RUNBOOK_UNLEASH_TOKEN=self.token(), RUNBOOK_UNLEASH_ADMIN_PASSWORD=secret_file(self.pwfile, 12),
            CHECK_VERSION="false", SEND_TELEMETRY="false", NODE_ENV="production", TZ="UTC",
        )
        for k in ("DATABASE_URL", "DATABASE_URL_FILE", "INIT_ADMIN_API_TOKENS", "UNLEASH_VERSION_URL"):
            env.pop(k, None)  # would override or extend what unleash.js passes
        self.spawn([node, Path(__file__).with_name("unleash.js")], env)

    def env(self):
        return {"RUNBOOK_UNLEASH_URL": f"http://{HOST}:{self.port}", "RUNBOOK_UNLEASH_TOKEN": self.token()}


class Smtp(Background):
    """A real SMTP server (aiosmtpd, tests/servers/smtp_sink.py) that keeps each message it accepts in its mailbox
    directory, with AUTH required (a generated password): the notify role's email channel sends to it."""

    name = "smtp"
    needle = "smtp_sink.py"
    user = "runbook"

    @property
    def mailbox(self) -> Path:
        return self.dir / "mailbox"

    @property
    def authfile(self) -> Path:
        return self.dir / "auth"

    def password(self) -> str:
        return secret_file(self.dir / "password", 12)

    def answers(self):
        with socket.create_connection((HOST, self.port), timeout=2) as s:
            return s.recv(64).startswith(b"220")

    def launch(self):
        self.record["port"] = pick_port(self.port)
        write_private(self.authfile, f"{self.user}:{self.password()}\n")
        self.spawn([sys.executable, Path(__file__).parents[1] / "servers" / "smtp_sink.py", self.mailbox,
                    "--port", self.port, "--auth-file", self.authfile], child_env(self.name))

    def env(self):
        return {"RUNBOOK_SMTP_HOST": HOST, "RUNBOOK_SMTP_PORT": self.port, "RUNBOOK_SMTP_USER": self.user,
                "RUNBOOK_SMTP_PASSWORD": self.password(), "RUNBOOK_SMTP_MAILBOX": str(self.mailbox)}


class PM2(Service):
    name = "pm2"

    def __init__(self, record):
        super().__init__(record)
        self.pidfile = self.dir / "pm2.pid"
        self.log = self.dir / "pm2.log"

    def cli(self, *args, what: str):
        env = child_env(self.name, PM2_HOME=self.dir, PM2_DISABLE_VERSION_CHECK="1")
        return run([PM2_BIN, *args], what, env=env, cwd=REPO, timeout=60)

    def pid(self):
        # Any daemon serving our PM2_HOME counts, also one a test respawned with `pm2 kill` + `pm2 start`.
        pid = read_pid(self.pidfile)
        return pid if proc_matches(pid, "PM2", marker=f"PM2_HOME={self.dir}") else None

    def answers(self):
        with socket.socket(socket.AF_UNIX) as s:  # the daemon's RPC socket accepts connections
            s.settimeout(2)
            s.connect(str(self.dir / "rpc.sock"))
            return self.pid() is not None

    def orphan_apps(self) -> list[int]:
        """Apps left running by a killed daemon: their environ has our PM2_HOME and a pm_id."""
        home = f"PM2_HOME={self.dir}".encode()
        found = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit() and int(p.name) != os.getpid():
                try:
                    env = (p / "environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if home in env and any(e.startswith(b"pm_id=") for e in env) and proc_alive(int(p.name)):
                    found.append(int(p.name))
        return found

    def cleanup_stale(self):
        # Only called with no live daemon: its apps are orphans of our private PM2 home.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.orphan_apps()
            for pid in pids:
                os.kill(pid, sig)
            if pids:
                log(f"pm2: {signal.Signals(sig).name} to apps {pids} left by a dead daemon")
            end = time.monotonic() + 5
            while self.orphan_apps() and time.monotonic() < end:
                time.sleep(0.1)
        for f in ("pm2.pid", "rpc.sock", "pub.sock", "interactor.sock"):
            (self.dir / f).unlink(missing_ok=True)

    def launch(self):
        if not PM2_BIN.exists():
            raise StackError(f"{PM2_BIN} missing (run npm install)")
        # `touch` marks the home as initialised: the CLI then skips its banner and install-time version ping.
        (self.dir / "touch").write_text(str(int(time.time() * 1000)))
        self.cli("ping", what="pm2 ping")

    def wait(self):
        wait_for("pm2", self.answers, self.timeout, self.log)

    def stop(self):
        pid = self.pid()
        if pid is not None:
            self.cli("kill", what="pm2 kill")
            if not wait_gone(pid, 10):
                os.kill(pid, signal.SIGKILL)
        self.cleanup_stale()
        self.stop_app_hosts()

    def stop_app_hosts(self):
        """The local inventories give each app host its own PM2 home under <stack>/deploy/<env>/<host>/pm2
        (make demo started them, through the stack): stop those daemons and their apps too."""
        deploy = self.dir.parent / "deploy"
        for home in sorted(deploy.glob("*/*/pm2")) if deploy.is_dir() else []:
            if (home / "rpc.sock").exists():
                env = child_env(self.name, PM2_HOME=home, PM2_DISABLE_VERSION_CHECK="1")
                try:
                    run([PM2_BIN, "kill"], f"pm2 kill ({home})", env=env, cwd=REPO, timeout=60)
                except (StackError, subprocess.TimeoutExpired) as exc:
                    log(f"pm2: could not stop the app host daemon of {home}: {exc}")

    def env(self):
        return {"PM2_HOME": self.dir, "RUNBOOK_PM2_BIN": PM2_BIN}


# ---------------------------------------------------------------- the stack


class Stack:
    def __init__(self):
        self.json_path = STATE / "stack.json"
        self.env_path = STATE / "stack.env"
        data = {}
        if self.json_path.exists():
            try:
                data = json.loads(self.json_path.read_text())
            except ValueError:
                data = {}
        self.records = data.get("services", {})

        def rec(name):
            return self.records.setdefault(name, {})

        pg = Postgres(rec("postgres"))
        self.services = {"postgres": pg, "redis": Redis(rec("redis")), "moto": Moto(rec("moto")),
                         "pm2": PM2(rec("pm2")), "unleash": Unleash(rec("unleash"), pg), "smtp": Smtp(rec("smtp"))}

    def lock(self):
        STATE.mkdir(parents=True, exist_ok=True)
        os.chmod(STATE, 0o711)
        self._lock = open(STATE / ".lock", "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)

    def save(self) -> dict:
        env = {}
        for name in ORDER:
            svc = self.services[name]
            if svc.dir.exists() and svc.running():
                env.update({k: str(v) for k, v in svc.env().items()})
        env["RUNBOOK_STACK_DIR"] = str(STATE)
        write_private(self.env_path, "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
        write_private(self.json_path, json.dumps({"env": env, "services": self.records}, indent=2) + "\n")
        return env

    def start(self, names: list[str]) -> None:
        if "unleash" in names and "postgres" not in names:
            names = ["postgres", *names]
        t0 = time.monotonic()
        # Launch in order (unleash right after postgres, as it is the slowest), then wait for all.
        launch_order = sorted(names, key=["postgres", "unleash", "redis", "moto", "pm2", "smtp"].index)
        outcome, launched = {}, {}
        try:
            for name in launch_order:
                svc = self.services[name]
                launched[name] = time.monotonic()
                outcome[name] = svc.start()
                if name == "postgres":  # unleash needs it
                    self.ready(svc, outcome[name], launched[name])
            for name in launch_order:
                if name != "postgres":
                    self.ready(self.services[name], outcome[name], launched[name])
        finally:
            self.save()
        log(f"stack ready in {time.monotonic() - t0:.1f}s; env: {self.env_path}")

    @staticmethod
    def ready(svc: Service, outcome: str, launched: float) -> None:
        if outcome == "started":
            svc.wait()
        svc.record["enabled"] = True
        log(f"{svc.name:9} {outcome:16} port {getattr(svc, 'port', None) or '-':<6} "
            f"(ready {time.monotonic() - launched:.1f}s after its launch)")

    def stop(self, names: list[str], purge: bool) -> None:
        errors = []
        for name in reversed(ORDER):
            svc = self.services[name]
            if name not in names or not svc.dir.exists():
                continue
            was = svc.pid()
            try:
                svc.stop()
            except (StackError, OSError) as e:  # keep stopping the others
                errors.append(f"{name}: {e}")
                continue
            svc.record["enabled"] = False
            log(f"{name:9} {'stopped' if was else 'not running'}")
        if errors:
            self.save()
            raise StackError("could not stop everything:\n" + "\n".join(errors))
        if purge and set(names) == set(ORDER):
            shutil.rmtree(STATE)
            log(f"removed {STATE}")
            return
        if purge:
            for name in names:
                shutil.rmtree(self.services[name].dir, ignore_errors=True)
                self.records.pop(name, None)
        self.save()

    def status(self) -> int:
        recorded = [n for n in ORDER if self.records.get(n, {}).get("enabled")]
        if not recorded:
            log(f"no services recorded in {STATE}")
            return 1
        ok = True
        for name in recorded:
            svc = self.services[name]
            pid, up = svc.pid(), svc.running()
            ok &= up
            log(f"{name:9} {'up' if up else 'DOWN':5} pid {pid or '-':<8} port {getattr(svc, 'port', None) or '-'}")
        return 0 if ok else 1


def parse_only(text: str | None) -> list[str]:
    if not text:
        return list(ORDER)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        raise StackError(f"unknown service(s) {unknown}; choose from {ORDER}")
    return names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_start = sub.add_parser("start", help="start services (default: all, or $RUNBOOK_STACK_SERVICES)")
    p_start.add_argument("--only", help=f"comma-separated subset of {','.join(ORDER)}")
    p_stop = sub.add_parser("stop", help="stop what the pid files name; keep data unless --purge")
    p_stop.add_argument("--only", help="comma-separated subset")
    p_stop.add_argument("--purge", action="store_true", help="also remove the state (all: the whole state dir)")
    sub.add_parser("status", help="exit 0 if every recorded service answers")
    sub.add_parser("env", help="print the stack.env file")
    args = ap.parse_args(argv)

    try:
        if args.cmd == "env":
            path = STATE / "stack.env"
            if not path.exists():
                raise StackError(f"{path} does not exist: run start first")
            sys.stdout.write(path.read_text())
            return 0
        if os.geteuid() != 0:
            raise StackError("run as root (postgres is started through runuser)")
        stack = Stack()
        if args.cmd == "status":
            return stack.status()
        stack.lock()
        if args.cmd == "start":
            stack.start(parse_only(args.only or os.environ.get("RUNBOOK_STACK_SERVICES")))
        else:
            stack.stop(parse_only(args.only), args.purge)
        return 0
    except StackError as e:
        print(f"stack: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
