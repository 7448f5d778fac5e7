//! A real OpenSSH server on 127.0.0.1 (Debian's `openssh-server`), started per test on a free
//! port with its own configuration, host key and client key, serving a bare git repository:
//! what a private module (`git::ssh://…`) looks like to a stage. Needs root (sshd drops
//! privileges per connection) and `/usr/sbin/sshd`, `ssh-keygen` and `git`; it panics, naming
//! what is missing, rather than skip.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running sshd; killed on drop.
pub struct Sshd {
    pub port: u16,
    /// The client's private key (OpenSSH format), to give to a stage.
    pub client_key: String,
    /// The `known_hosts` line of this server (`[127.0.0.1]:PORT ssh-ed25519 …`).
    pub known_hosts: String,
    /// `ssh://root@127.0.0.1:PORT/…/repo.git`: a bare repository with one commit whose
    /// `README` says `hello from the private module`.
    pub repo_url: String,
    pub dir: PathBuf,
    child: Child,
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (install openssh-server, openssh-client, git)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Sshd {
    /// Starts the server in a fresh directory under `parent` and waits until it accepts
    /// connections.
    pub fn start(parent: &Path) -> Sshd {
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "/usr/sbin/sshd is missing: install openssh-server"
        );
        let dir = parent.join("sshd");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        for (key, comment) in [("host_key", "host"), ("client_key", "client")] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                .arg(dir.join(key)));
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        let repo = dir.join("repo.git");
        let work = dir.join("work");
        run(Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(&repo));
        run(Command::new("git").args(["init", "-q"]).arg(&work));
        std::fs::write(work.join("README"), "hello from the private module\n").unwrap();
        run(Command::new("git")
            .arg("-C")
            .arg(&work)
            .args(["add", "README"]));
        run(Command::new("git").arg("-C").arg(&work).args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.test",
            "commit",
            "-q",
            "-m",
            "module",
        ]));
        run(Command::new("git")
            .arg("-C")
            .arg(&work)
            .args(["push", "-q"])
            .arg(&repo)
            .arg("HEAD:refs/heads/main"));
        run(Command::new("git").arg("--git-dir").arg(&repo).args([
            "symbolic-ref",
            "HEAD",
            "refs/heads/main",
        ]));
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nAllowUsers root\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .expect("starting /usr/sbin/sshd");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on 127.0.0.1:{port}: {}",
                std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let mut parts = host_pub.split_whitespace();
        let known_hosts = format!(
            "[127.0.0.1]:{port} {} {}",
            parts.next().unwrap(),
            parts.next().unwrap()
        );
        Sshd {
            port,
            client_key: std::fs::read_to_string(dir.join("client_key")).unwrap(),
            known_hosts,
            repo_url: format!("ssh://root@127.0.0.1:{port}{}", repo.display()),
            dir,
            child,
        }
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hook script that installs the key and `known_hosts` from the variables `SSH_KEY` and
/// `SSH_KNOWN_HOSTS` into the stage's `~/.ssh` (its home from its user entry), prints
/// `id -un` and `whoami`, runs a command over ssh and clones the repository with strict host
/// key checking on.
pub fn clone_hook(sshd: &Sshd) -> String {
    format!(
        "set -e; echo \"id-un=$(id -un)\"; echo \"whoami=$(whoami)\"; \
         mkdir -p ~/.ssh; chmod 700 ~/.ssh; printf '%s\\n' \"$SSH_KEY\" > ~/.ssh/id_ed25519; \
         chmod 600 ~/.ssh/id_ed25519; printf '%s\\n' \"$SSH_KNOWN_HOSTS\" > ~/.ssh/known_hosts; \
         export GIT_SSH_COMMAND='ssh -o BatchMode=yes -o StrictHostKeyChecking=yes'; \
         $GIT_SSH_COMMAND -p {port} root@127.0.0.1 echo ssh-ok; \
         git clone -q {url} \"$TMPDIR/module\"; echo \"module says: $(cat \"$TMPDIR/module/README\")\"",
        port = sshd.port,
        url = sshd.repo_url,
    )
}
