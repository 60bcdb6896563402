//! An aws-sdk-s3 client for setting up and inspecting buckets in the tests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::{ByteStream, DateTime as SmithyDateTime};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;

use crate::server::{Creds, S3Server};

/// The prefix Ferry keeps its reports under; excluded from comparisons.
pub const FERRY_PREFIX: &str = ".ferry/";

/// A test client: region us-east-1, path-style addressing, static credentials, and checksums
/// only when required (so that what we store and read back is exactly the bytes we mean).
#[derive(Clone, Debug)]
pub struct S3 {
    pub client: Client,
    pub endpoint: String,
}

/// One object as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified_secs: i64,
}

/// System metadata and user metadata for a put; everything optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub cache_control: Option<String>,
    pub content_language: Option<String>,
    /// RFC 1123 / HTTP date, e.g. `Wed, 21 Oct 2037 07:28:00 GMT`.
    pub expires: Option<String>,
    pub user: BTreeMap<String, String>,
}

impl S3 {
    pub fn new(endpoint: &str, creds: &Creds) -> S3 {
        let credentials = Credentials::new(
            creds.access_key.clone(),
            creds.secret_key.clone(),
            None,
            None,
            "ferry-tests",
        );
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .force_path_style(true)
            .credentials_provider(credentials)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        S3 {
            client: Client::from_conf(config),
            endpoint: endpoint.to_string(),
        }
    }

    pub fn for_server(server: &S3Server) -> S3 {
        S3::new(&server.endpoint, &server.creds)
    }

    /// Create a bucket with a unique name starting with `hint` and return the name.
    pub async fn create_bucket(&self, hint: &str) -> String {
        let name = unique_bucket_name(hint);
        self.create_bucket_named(&name).await;
        name
    }

    pub async fn create_bucket_named(&self, name: &str) {
        self.client
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {name} on {}: {e:?}", self.endpoint));
    }

    /// Put an object (a single PutObject).
    pub async fn put(&self, bucket: &str, key: &str, body: impl Into<Vec<u8>>) {
        self.put_with(bucket, key, body, &Meta::default()).await
    }

    /// Delete an object (absent is fine).
    pub async fn delete(&self, bucket: &str, key: &str) {
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("delete {bucket}/{key}: {e:?}"));
    }

    /// Put an object with metadata.
    pub async fn put_with(&self, bucket: &str, key: &str, body: impl Into<Vec<u8>>, meta: &Meta) {
        let body: Vec<u8> = body.into();
        let mut req = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body));
        if let Some(v) = &meta.content_type {
            req = req.content_type(v);
        }
        if let Some(v) = &meta.content_encoding {
            req = req.content_encoding(v);
        }
        if let Some(v) = &meta.content_disposition {
            req = req.content_disposition(v);
        }
        if let Some(v) = &meta.cache_control {
            req = req.cache_control(v);
        }
        if let Some(v) = &meta.content_language {
            req = req.content_language(v);
        }
        if let Some(v) = &meta.expires {
            let t = SmithyDateTime::from_str(v, aws_sdk_s3::primitives::DateTimeFormat::HttpDate)
                .unwrap_or_else(|e| panic!("bad Expires {v:?}: {e}"));
            req = req.expires(t);
        }
        for (k, v) in &meta.user {
            req = req.metadata(k, v);
        }
        req.send()
            .await
            .unwrap_or_else(|e| panic!("put s3://{bucket}/{key} on {}: {e:?}", self.endpoint));
    }

    /// Put an object with a multipart upload of `part_size` parts (so its ETag is not an MD5).
    pub async fn put_multipart(&self, bucket: &str, key: &str, body: &[u8], part_size: usize) {
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create multipart upload {key}: {e:?}"));
        let upload_id = upload.upload_id().expect("upload id").to_string();
        let mut parts = Vec::new();
        for (i, chunk) in body.chunks(part_size).enumerate() {
            let n = i as i32 + 1;
            let out = self
                .client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .part_number(n)
                .body(ByteStream::from(chunk.to_vec()))
                .send()
                .await
                .unwrap_or_else(|e| panic!("upload part {n} of {key}: {e:?}"));
            parts.push(
                CompletedPart::builder()
                    .part_number(n)
                    .e_tag(out.e_tag().unwrap_or_default())
                    .build(),
            );
        }
        self.client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("complete multipart upload {key}: {e:?}"));
    }

    /// Put many objects, a few at a time.
    pub async fn put_all(&self, bucket: &str, objects: &BTreeMap<String, Vec<u8>>) {
        use futures::stream::{self, StreamExt};
        stream::iter(objects.iter())
            .for_each_concurrent(
                8,
                |(k, v)| async move { self.put(bucket, k, v.clone()).await },
            )
            .await;
    }

    /// Every object under `prefix`, `.ferry/` included, in listing order.
    pub async fn list_all(&self, bucket: &str, prefix: &str) -> Vec<Listed> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token.clone())
                .send()
                .await
                .unwrap_or_else(|e| {
                    panic!("list s3://{bucket}/{prefix} on {}: {e:?}", self.endpoint)
                });
            for o in resp.contents() {
                out.push(Listed {
                    key: o.key().unwrap_or_default().to_string(),
                    size: o.size().unwrap_or_default() as u64,
                    etag: o.e_tag().unwrap_or_default().to_string(),
                    last_modified_secs: o.last_modified().map(|t| t.secs()).unwrap_or_default(),
                });
            }
            match resp.next_continuation_token() {
                Some(t) if resp.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out
    }

    /// Keys and sizes of the bucket, without Ferry's own `.ferry/` objects.
    pub async fn list(&self, bucket: &str) -> BTreeMap<String, u64> {
        self.list_all(bucket, "")
            .await
            .into_iter()
            .filter(|o| !is_ferry_key(&o.key))
            .map(|o| (o.key, o.size))
            .collect()
    }

    /// Keys of the bucket under `.ferry/` (Ferry's reports).
    pub async fn list_ferry_keys(&self, bucket: &str) -> Vec<String> {
        self.list_all(bucket, "")
            .await
            .into_iter()
            .filter(|o| is_ferry_key(&o.key))
            .map(|o| o.key)
            .collect()
    }

    /// The bytes of an object, exactly as stored (no checksum validation, no decoding).
    pub async fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let resp = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get s3://{bucket}/{key} on {}: {e:?}", self.endpoint));
        let declared = resp.content_length();
        let body = resp
            .body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("read body of {key}: {e}"))
            .to_vec();
        if let Some(len) = declared {
            assert_eq!(
                len as usize,
                body.len(),
                "s3://{bucket}/{key}: Content-Length differs from the body read"
            );
        }
        body
    }

    /// The object's bytes, or None when it does not exist (one GET: an object deleted
    /// between a listing and this call is None, not a failure).
    pub async fn try_get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        match self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(resp) => {
                let declared = resp.content_length();
                let body = resp
                    .body
                    .collect()
                    .await
                    .unwrap_or_else(|e| panic!("read body of {key}: {e}"))
                    .into_bytes()
                    .to_vec();
                if let Some(n) = declared {
                    assert_eq!(body.len() as i64, n, "s3://{bucket}/{key}: short body");
                }
                Some(body)
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => None,
            Err(e) => panic!("get s3://{bucket}/{key}: {e:?}"),
        }
    }

    pub async fn head(
        &self,
        bucket: &str,
        key: &str,
    ) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
        self.client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("head s3://{bucket}/{key} on {}: {e:?}", self.endpoint))
    }

    /// The metadata of an object, in the shape of [`Meta`] (Expires as an HTTP date).
    pub async fn meta(&self, bucket: &str, key: &str) -> Meta {
        let h = self.head(bucket, key).await;
        #[allow(deprecated)]
        let expires = h.expires_string().map(|s| s.to_string()).or_else(|| {
            h.expires()
                .and_then(|t| t.fmt(aws_sdk_s3::primitives::DateTimeFormat::HttpDate).ok())
        });
        Meta {
            content_type: h.content_type().map(str::to_string),
            content_encoding: h.content_encoding().map(str::to_string),
            content_disposition: h.content_disposition().map(str::to_string),
            cache_control: h.cache_control().map(str::to_string),
            content_language: h.content_language().map(str::to_string),
            expires,
            user: h
                .metadata()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        }
    }

    /// Every object of the bucket (without `.ferry/`) with its bytes.
    pub async fn contents(&self, bucket: &str) -> BTreeMap<String, Vec<u8>> {
        use futures::stream::{self, StreamExt};
        // 16 GETs at a time: a bucket of 20,000 objects read one by one takes minutes.
        stream::iter(self.list(bucket).await.into_keys())
            .map(|key| async move {
                let body = self.get(bucket, &key).await;
                (key, body)
            })
            .buffer_unordered(16)
            .collect()
            .await
    }
}

/// Whether a key is one of Ferry's own (reports under `.ferry/`).
pub fn is_ferry_key(key: &str) -> bool {
    key.starts_with(FERRY_PREFIX) || key.contains("/.ferry/reports/")
}

/// A bucket name no other test (or test process) uses: `hint` plus pid, counter and random bits.
pub fn unique_bucket_name(hint: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let clean: String = hint
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(30)
        .collect();
    let clean = clean.trim_matches('-');
    let clean = if clean.is_empty() { "b" } else { clean };
    format!(
        "{clean}-{}-{n}-{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}
