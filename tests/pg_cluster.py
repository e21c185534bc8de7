"""A throwaway PostgreSQL cluster for tests and benchmarks: Debian's `postgresql` (the newest
/usr/lib/postgresql/<ver>), `initdb` into a folder of the caller's, run as the `postgres` user
(initdb refuses root), listening on a free loopback port with its unix socket inside the folder.
`stop()` shuts it down (also safe to call twice); the caller deletes the folder.

    with PgCluster(work / "pg", password="s3cret", settings={"wal_level": "logical"}) as pg:
        with psycopg.connect(pg.dsn()) as c: ...

TCP logins need the password (scram-sha-256) when one is given; the unix socket trusts the
`postgres` user (for setup).
"""

import glob
import os
import pwd
import signal
import socket
import subprocess
import time
from pathlib import Path


def log(msg):
    print(msg, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines=30):
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def postgres_bindir():
    """The newest /usr/lib/postgresql/<ver>/bin, installing Debian's `postgresql` if none."""
    def found():
        dirs = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(f"{d}/initdb")]
        return max(dirs, key=lambda d: int(Path(d).parent.name), default=None)

    if found() is None:
        log("installing PostgreSQL: apt-get install -y postgresql")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=True, env=env)
    bindir = found()
    if bindir is None:
        raise SystemExit("no /usr/lib/postgresql/<ver>/bin/initdb after installing postgresql")
    return Path(bindir)


class PgCluster:
    """One cluster in `root` (created), run as the `postgres` user."""

    def __init__(self, root: Path, password=None, settings=None, bindir=None):
        self.bindir = Path(bindir) if bindir else postgres_bindir()
        self.root, self.port, self.password = Path(root), free_port(), password
        self.data, self.sock = self.root / "data", self.root / "sock"
        self.log_path = self.root / "postgres.log"
        self.settings = dict(settings or {})
        self.proc = None
        pw = pwd.getpwnam("postgres")
        self.uid, self.gid = pw.pw_uid, pw.pw_gid

    def as_postgres(self, **kw):
        return dict(user=self.uid, group=self.gid, extra_groups=[], cwd=self.root,
                    env={"PATH": os.environ["PATH"], "LC_ALL": "C", "HOME": str(self.root)}, **kw)

    def start(self, timeout=60):
        self.sock.mkdir(parents=True)
        for p in (self.root, self.sock):
            os.chown(p, self.uid, self.gid)
        auth = ["-A", "trust"]
        if self.password is not None:
            pwfile = self.root / "pwfile"
            pwfile.write_text(self.password + "\n")
            os.chown(pwfile, self.uid, self.gid)
            auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        subprocess.run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                        *auth, "-E", "UTF8", "--locale=C", "--no-sync"],
                       check=True, stdout=subprocess.DEVNULL, **self.as_postgres())
        args = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-k", str(self.sock), "-c", "listen_addresses=127.0.0.1"]
        for k, v in self.settings.items():
            args += ["-c", f"{k}={v}"]
        self.log_file = open(self.log_path, "w")
        os.chown(self.log_path, self.uid, self.gid)
        self.proc = subprocess.Popen(args, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     **self.as_postgres())
        deadline = time.time() + timeout
        while not (self.sock / f".s.PGSQL.{self.port}").exists() or not self.ready():
            if self.proc.poll() is not None:
                raise SystemExit(f"postgres exited ({self.proc.returncode}):\n" + tail(self.log_path))
            if time.time() > deadline:
                self.stop()
                raise SystemExit(f"postgres did not start within {timeout} s:\n" + tail(self.log_path))
            time.sleep(0.1)
        return self

    def ready(self):
        r = subprocess.run([str(self.bindir / "pg_isready"), "-q", "-h", str(self.sock),
                            "-p", str(self.port)], check=False)
        return r.returncode == 0

    def url(self, dbname="postgres", user="postgres", password=None):
        """A postgres:// URL over TCP (with the cluster's password unless another is given)."""
        pw = self.password if password is None else password
        auth = f"{user}:{pw}@" if pw is not None else f"{user}@"
        return f"postgres://{auth}127.0.0.1:{self.port}/{dbname}"

    def dsn(self, dbname="postgres"):
        """A libpq connection string over the unix socket, as the `postgres` superuser."""
        return f"host={self.sock} port={self.port} user=postgres dbname={dbname}"

    def restart(self, timeout=60):
        """Stops the server (fast shutdown, as `pg_ctl restart -m fast`) and starts it again on
        the same data folder and port."""
        self.stop()
        self.log_file = open(self.log_path, "a")
        args = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-k", str(self.sock), "-c", "listen_addresses=127.0.0.1"]
        for k, v in self.settings.items():
            args += ["-c", f"{k}={v}"]
        self.proc = subprocess.Popen(args, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     **self.as_postgres())
        deadline = time.time() + timeout
        while not self.ready():
            if self.proc.poll() is not None or time.time() > deadline:
                raise SystemExit("postgres did not restart:\n" + tail(self.log_path))
            time.sleep(0.1)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log_file.close()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
