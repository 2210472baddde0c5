//! A real S3-compatible server inside the test process: `s3s` speaks the S3
//! protocol and checks SigV4 signatures, `s3s-fs` keeps the objects as files
//! under a directory the test owns, hyper serves it on an ephemeral port.

use std::path::Path;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// A running server. Dropping it stops accepting and closes every open connection.
pub struct S3Server {
    /// `http://127.0.0.1:<port>`, for path-style requests.
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    /// A bucket that exists from the start.
    pub bucket: String,
    pub region: String,
    serving: JoinHandle<()>,
}

impl S3Server {
    /// Starts a server that keeps its buckets as directories under `root`.
    ///
    /// The listener is bound before this returns, so the server is ready at once:
    /// connections made before the accept loop runs wait in the backlog.
    pub async fn start(root: &Path) -> S3Server {
        let access_key = "custodian-test-access-key".to_owned();
        let secret_key = "custodian-test-secret-key-0123456789".to_owned();
        let bucket = "custodian-test".to_owned();

        // s3s-fs maps a bucket to a directory directly under its root.
        std::fs::create_dir_all(root.join(&bucket)).expect("creating the bucket directory");
        let fs = s3s_fs::FileSystem::new(root).expect("opening the s3s-fs root");

        let mut builder = S3ServiceBuilder::new(fs);
        // Every request must carry a valid SigV4 (or V2) signature for these credentials.
        builder.set_auth(SimpleAuth::from_single(access_key.clone(), secret_key.clone()));
        let service = builder.build();

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding the S3 server");
        let addr = listener.local_addr().expect("reading the S3 server address");

        let serving = tokio::spawn(async move {
            // Owned by this task: aborting the task drops the set, which aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                connections.spawn(async move {
                    // A client hanging up mid-request is not the test's concern here.
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(socket), service).await;
                });
                while connections.try_join_next().is_some() {}
            }
        });

        S3Server {
            endpoint: format!("http://{addr}"),
            access_key,
            secret_key,
            bucket,
            region: "us-east-1".to_owned(),
            serving,
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.serving.abort();
    }
}
