//! S3-compatible buckets through aws-sdk-s3.

mod errors;

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, MetadataDirective, ObjectCannedAcl,
    ObjectStorageClass, ServerSideEncryption, StorageClass,
};
use aws_sdk_s3::Client;
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use ferry_core::stores::{
    S3Auth, S3Config, SideSecrets, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, S3_SESSION_TOKEN,
};
use ferry_core::FailureClass;
use tokio::sync::mpsc;

use super::{
    etag_is_md5, Body, Listing, ObjectInfo, ObjectMeta, OpenUpload, ServerCopy, Sink, SinkCaps,
    Source, SourceCaps, Upload,
};
use crate::error::TransferError;
use crate::limit::{Buffer, Limits};
use crate::retry::{with_retry, RetryPolicy};

pub use errors::classify;

/// Sets the preserved headers and the destination's write options on a PutObject or
/// CreateMultipartUpload request.
macro_rules! with_headers {
    ($req:expr, $meta:expr, $w:expr) => {
        $req.set_content_type($meta.content_type.clone())
            .set_content_encoding($meta.content_encoding.clone())
            .set_content_disposition($meta.content_disposition.clone())
            .set_cache_control($meta.cache_control.clone())
            .set_content_language($meta.content_language.clone())
            .set_expires($meta.expires.as_deref().and_then(parse_http_date))
            .set_metadata(Some($meta.user.clone().into_iter().collect()))
            .set_storage_class($w.storage_class.clone())
            .set_server_side_encryption($w.sse.clone())
            .set_ssekms_key_id($w.kms_key_id.clone())
            .set_acl($w.acl.clone())
    };
}

/// The preserved headers of a HeadObject or GetObject answer.
macro_rules! meta_of {
    ($out:expr, $modified:expr) => {
        ObjectMeta {
            content_type: $out.content_type().map(str::to_string),
            content_encoding: $out.content_encoding().map(str::to_string),
            content_disposition: $out.content_disposition().map(str::to_string),
            cache_control: $out.cache_control().map(str::to_string),
            content_language: $out.content_language().map(str::to_string),
            expires: $out.expires_string().map(str::to_string),
            user: $out
                .metadata()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            modified: $modified,
            etag_not_md5: !md5_etag_of!($out),
        }
    };
}

/// Whether the ETag of an answer (HeadObject, GetObject, PutObject, CopyObject) is derived
/// from the MD5 of the bytes, by the encryption the same answer reports ([`etag_is_md5`]).
macro_rules! md5_etag_of {
    ($out:expr) => {
        etag_is_md5(
            $out.server_side_encryption().map(|s| s.as_str()),
            $out.sse_customer_algorithm(),
        )
    };
}

/// Who a store's requests are signed as.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Identity {
    /// An access key id: the account and its permissions.
    Key(String),
    /// The default provider chain of this process (the same for every side that uses it).
    DefaultChain,
    /// Nobody: unsigned requests.
    Anonymous,
}

/// Write options of a destination bucket.
#[derive(Clone, Debug, Default)]
struct WriteOptions {
    storage_class: Option<StorageClass>,
    sse: Option<ServerSideEncryption>,
    kms_key_id: Option<String>,
    acl: Option<ObjectCannedAcl>,
}

impl WriteOptions {
    /// The options for Ferry's own objects (failure reports, manifests, delete plans), which
    /// hold key names and error texts: whatever the data objects get, they are never
    /// readable beyond the bucket's owner and the writer. A canned ACL that grants nobody
    /// else (`private`, `bucket-owner-read`, `bucket-owner-full-control`, which a bucket
    /// policy may require) is kept; any other (`public-read`, `public-read-write`,
    /// `authenticated-read`, `aws-exec-read`...) is dropped, so the object gets the bucket's
    /// default, private. Encryption is kept. The storage class is not: Ferry reads its reports
    /// back (`--retry-failed`, the delete stage), which an archive class would forbid.
    fn private(&self) -> WriteOptions {
        WriteOptions {
            storage_class: None,
            acl: self.acl.clone().filter(|a| {
                matches!(
                    a,
                    ObjectCannedAcl::Private
                        | ObjectCannedAcl::BucketOwnerRead
                        | ObjectCannedAcl::BucketOwnerFullControl
                )
            }),
            ..self.clone()
        }
    }
}

/// A bucket and key prefix with a client of its own.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    /// The service URL as configured (None: AWS).
    endpoint: Option<String>,
    region: String,
    /// Who it signs as: two stores that sign as the same account on the same service may
    /// copy between them.
    identity: Identity,
    /// The endpoint is HTTPS (AWS itself when none is given).
    tls: bool,
    write: WriteOptions,
    limits: Arc<Limits>,
    retry: RetryPolicy,
    page_size: i32,
    /// Leave Ferry's own `.ferry/` folder out of listings.
    hide_ferry: bool,
    /// The bucket encrypts new objects with SSE-KMS (or DSSE-KMS) by default, as its
    /// encryption configuration said when the store was opened: the ETags of its listings are
    /// then not taken for MD5s (a listing does not say how each object is encrypted).
    kms_default: bool,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Converts an SDK timestamp.
fn to_chrono(t: &aws_sdk_s3::primitives::DateTime) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(t.secs(), t.subsec_nanos()).single()
}

fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

fn b64(md5: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5)
}

impl S3Store {
    /// Builds the client for one side, with its own explicit credentials (never the other
    /// side's), S3-compatible checksum settings and no SDK retries (the engine retries).
    pub async fn connect(
        cfg: &S3Config,
        secrets: &SideSecrets,
        limits: Arc<Limits>,
        retry: RetryPolicy,
    ) -> Result<S3Store, TransferError> {
        let region = Region::new(cfg.region.clone());
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(region.clone());
        let identity;
        loader = match &cfg.auth {
            S3Auth::Secret { name } => {
                let (Some(id), Some(key)) = (
                    secrets.get(S3_ACCESS_KEY_ID),
                    secrets.get(S3_SECRET_ACCESS_KEY),
                ) else {
                    return Err(TransferError::new(
                        FailureClass::InvalidRequest,
                        format!(
                            "the credentials of Secret {name} are missing: it must provide \
                             {S3_ACCESS_KEY_ID} and {S3_SECRET_ACCESS_KEY}"
                        ),
                    )
                    .fatal());
                };
                identity = Identity::Key(id.to_string());
                loader.credentials_provider(Credentials::new(
                    id,
                    key,
                    secrets.get(S3_SESSION_TOKEN).map(str::to_string),
                    None,
                    "ferry",
                ))
            }
            S3Auth::Anonymous => {
                identity = Identity::Anonymous;
                loader.no_credentials()
            }
            S3Auth::DefaultChain => {
                identity = Identity::DefaultChain;
                loader
            }
        };
        let shared = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .region(region)
            .force_path_style(cfg.force_path_style)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let Some(ep) = &cfg.endpoint {
            // Third-party S3 services reject (Garage) or mangle (s3rver) aws-chunked bodies
            // with CRC32 trailers: send checksums only where an operation requires them.
            b = b
                .endpoint_url(ep)
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        let w = &cfg.write;
        let write = WriteOptions {
            storage_class: w.storage_class.as_deref().map(StorageClass::from),
            sse: w.server_side_encryption.map(|s| match s {
                ferry_core::stores::ServerSideEncryption::AES256 => ServerSideEncryption::Aes256,
                ferry_core::stores::ServerSideEncryption::AwsKms => ServerSideEncryption::AwsKms,
            }),
            kms_key_id: w.kms_key_id.clone(),
            acl: w.canned_acl.as_deref().map(ObjectCannedAcl::from),
        };
        let mut store = S3Store {
            client: Client::from_conf(b.build()),
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix.clone(),
            endpoint: cfg
                .endpoint
                .as_deref()
                .map(|e| e.trim_end_matches('/').to_string()),
            region: cfg.region.clone(),
            identity,
            tls: cfg.endpoint.as_deref().is_none_or(|e| {
                e.get(..8)
                    .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
            }),
            write,
            limits,
            retry,
            page_size: 1000,
            hide_ferry: true,
            kms_default: false,
        };
        store.kms_default = store.bucket_encrypts_with_kms().await;
        Ok(store)
    }

    /// Whether the bucket's default encryption is SSE-KMS or DSSE-KMS
    /// (GetBucketEncryption). Best effort, one try of a few seconds: no answer (no such
    /// configuration, not allowed, not implemented, anonymous) is no.
    async fn bucket_encrypts_with_kms(&self) -> bool {
        if self.identity == Identity::Anonymous {
            return false;
        }
        let req = self
            .client
            .get_bucket_encryption()
            .bucket(&self.bucket)
            .send();
        let Ok(Ok(out)) = tokio::time::timeout(Duration::from_secs(3), req).await else {
            return false;
        };
        out.server_side_encryption_configuration()
            .map(|c| c.rules())
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r.apply_server_side_encryption_by_default())
            .any(|d| !etag_is_md5(Some(d.sse_algorithm().as_str()), None))
    }

    /// Whether `other` is the same service (endpoint and region) and signs as the same
    /// account (access key id, or both the default chain), so that this store may copy from
    /// it inside the service. Two Secrets holding the same keys are one account; an anonymous
    /// source is none (the destination's account may not be allowed to read it).
    fn same_account(&self, other: &S3Store) -> bool {
        other.identity != Identity::Anonymous
            && self.endpoint == other.endpoint
            && self.region == other.region
            && self.identity == other.identity
    }

    fn full(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// Whether the destination's ETags are MD5s of the bytes: not with SSE-KMS, asked for
    /// by the spec or the bucket's default ([`etag_is_md5`] decides per object where an
    /// answer says how it is encrypted; a listing does not).
    fn etags_are_md5(&self) -> bool {
        !self.kms_default && !matches!(self.write.sse, Some(ServerSideEncryption::AwsKms))
    }

    /// Whether a body must be signed (its SHA-256 in the SigV4 signature). Not when the
    /// request carries a Content-MD5, which is a signed header the service checks the body
    /// against, nor over TLS: hashing every byte with SHA-256 on both ends then only costs CPU
    /// (a sixth of Ferry's and a tenth of the receiving server's on W2), as the AWS CLI and
    /// s5cmd know. A plain-HTTP body without an MD5 stays signed.
    fn sign_body(&self, md5: Option<&[u8]>) -> bool {
        md5.is_none() && !self.tls
    }

    /// Server-side copy of a whole object (the server copies its metadata with it, guarded
    /// by `x-amz-copy-source-if-match`). Returns the new ETag.
    async fn copy_object_from(
        &self,
        from: &S3Store,
        key: &str,
        etag: Option<&str>,
    ) -> Result<Option<String>, TransferError> {
        self.limits.request().await;
        let w = &self.write;
        let out = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .copy_source(copy_source(&from.bucket, &from.full(key)))
            .set_copy_source_if_match(etag.map(quote))
            .metadata_directive(MetadataDirective::Copy)
            .set_storage_class(w.storage_class.clone())
            .set_server_side_encryption(w.sse.clone())
            .set_ssekms_key_id(w.kms_key_id.clone())
            .set_acl(w.acl.clone())
            .send()
            .await
            .map_err(|e| TransferError::from_sdk("CopyObject", &e))?;
        Ok(out
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .map(unquote)
            .filter(|_| md5_etag_of!(out)))
    }

    /// Server-side copy of one part (UploadPartCopy).
    async fn copy_part_from(
        &self,
        from: &S3Store,
        up: &Upload,
        number: i32,
        offset: u64,
        len: u64,
        etag: Option<&str>,
    ) -> Result<String, TransferError> {
        self.limits.request().await;
        let out = self
            .client
            .upload_part_copy()
            .bucket(&self.bucket)
            .key(self.full(&up.key))
            .upload_id(&up.id)
            .part_number(number)
            .copy_source(copy_source(&from.bucket, &from.full(&up.key)))
            .copy_source_range(format!("bytes={}-{}", offset, offset + len - 1))
            .set_copy_source_if_match(etag.map(quote))
            .send()
            .await
            .map_err(|e| TransferError::from_sdk("UploadPartCopy", &e))?;
        out.copy_part_result()
            .and_then(|r| r.e_tag())
            .map(unquote)
            .ok_or_else(|| {
                TransferError::new(FailureClass::Internal, "UploadPartCopy returned no ETag")
            })
    }

    /// The preflight (`docs/contract.md` §2): as a source, the prefix can be listed and an
    /// object in it read (a ranged GET of its first byte); as a destination, the bucket exists
    /// and, unless `dry_run`, accepts writes (a multipart upload created and aborted under
    /// `.ferry/preflight/`, which leaves nothing behind). The error names the permission that
    /// is missing.
    async fn check(&self, as_destination: bool, dry_run: bool) -> Result<(), TransferError> {
        if as_destination {
            with_retry(&self.retry, "HeadBucket", |_| async {
                self.client
                    .head_bucket()
                    .bucket(&self.bucket)
                    .send()
                    .await
                    .map_err(|e| TransferError::from_sdk("HeadBucket", &e))
            })
            .await
            .map_err(|e| bucket_error(e, &self.bucket))?;
            if dry_run {
                return Ok(());
            }
            return self.check_writes().await;
        }
        let page = with_retry(&self.retry, "ListObjectsV2", |_| async {
            self.client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .max_keys(PREFLIGHT_KEYS)
                .send()
                .await
                .map_err(|e| TransferError::from_sdk("ListObjectsV2", &e))
        })
        .await
        .map_err(|e| bucket_error(e, &self.bucket))?;
        // An object that can be read at once: not empty, not Ferry's, not archived.
        let readable = page.contents().iter().find_map(|o| {
            let key = o.key()?;
            let rel = key.strip_prefix(self.prefix.as_str())?;
            let archived = matches!(
                o.storage_class(),
                Some(ObjectStorageClass::Glacier) | Some(ObjectStorageClass::DeepArchive)
            );
            let ours = rel.starts_with(ferry_core::plan::FERRY_DIR);
            (o.size().unwrap_or(0) > 0 && !archived && !ours).then(|| key.to_string())
        });
        let Some(key) = readable else {
            return Ok(());
        };
        let read =
            with_retry(&self.retry, "GetObject", |_| async {
                let out = self
                    .client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .range("bytes=0-0")
                    .send()
                    .await
                    .map_err(|e| TransferError::from_sdk("GetObject", &e))?;
                out.body.collect().await.map(|_| ()).map_err(|e| {
                    TransferError::new(FailureClass::Network, format!("GetObject: {e}"))
                })
            })
            .await;
        match read {
            // Only a refusal says the job cannot work; an object archived in another tier,
            // gone meanwhile or failing on its own is the copy's to report.
            Err(e)
                if matches!(
                    e.class,
                    FailureClass::AccessDenied | FailureClass::AuthExpired
                ) =>
            {
                Err(missing_permission(
                    e,
                    "s3:GetObject",
                    &format!(
                        "the source can be listed but s3://{}/{key} cannot be read",
                        self.bucket
                    ),
                ))
            }
            Err(e) => {
                tracing::info!(key = %key, error = %e, "the preflight's read failed, not for want of permission");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// Creates a multipart upload under `.ferry/preflight/` and aborts it; then aborts any
    /// other upload of that key (a create whose answer was lost and was retried).
    async fn check_writes(&self) -> Result<(), TransferError> {
        let key = format!(
            "{}preflight/{}-{}",
            ferry_core::plan::FERRY_DIR,
            chrono::Utc::now().timestamp_micros(),
            std::process::id()
        );
        let res = self.create_and_abort(&key).await;
        if let Ok(open) = self.uploads_under(&key).await {
            for u in open {
                self.abort_upload(&u.upload).await;
            }
        }
        res
    }

    /// The open multipart uploads of keys under `under` (relative to the store's prefix).
    async fn uploads_under(&self, under: &str) -> Result<Vec<OpenUpload>, TransferError> {
        let full = self.full(under);
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = with_retry(&self.retry, "ListMultipartUploads", |_| {
                let (k, i) = (key_marker.clone(), id_marker.clone());
                let full = &full;
                async move {
                    self.limits.request().await;
                    self.client
                        .list_multipart_uploads()
                        .bucket(&self.bucket)
                        .prefix(full)
                        .set_key_marker(k)
                        .set_upload_id_marker(i)
                        .send()
                        .await
                        .map_err(|e| TransferError::from_sdk("ListMultipartUploads", &e))
                }
            })
            .await?;
            for u in page.uploads() {
                if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                    if let Some(rel) = k.strip_prefix(self.prefix.as_str()) {
                        out.push(OpenUpload {
                            upload: Upload {
                                key: rel.to_string(),
                                id: id.to_string(),
                            },
                            initiated: u.initiated().and_then(to_chrono),
                        });
                    }
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && id_marker.is_none() {
                return Ok(out);
            }
        }
    }

    async fn create_and_abort(&self, key: &str) -> Result<(), TransferError> {
        let full = self.full(key);
        let where_ = format!("s3://{}/{full}", self.bucket);
        // With the job's write settings (encryption, KMS key, ACL, storage class), as a
        // copy's: a bucket policy that requires them refuses an upload without them.
        let up = self
            .create_upload(key, &ObjectMeta::default(), 0)
            .await
            .map_err(|e| {
                missing_permission(
                    e,
                    "s3:PutObject",
                    &format!("the destination does not accept writes ({where_})"),
                )
            })?;
        let id = up.id.as_str();
        with_retry(&self.retry, "AbortMultipartUpload", |_| async {
            self.client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&full)
                .upload_id(id)
                .send()
                .await
                .map_err(|e| TransferError::from_sdk("AbortMultipartUpload", &e))
        })
        .await
        .map(|_| ())
        .map_err(|e| {
            missing_permission(
                e,
                "s3:AbortMultipartUpload",
                &format!(
                    "the preflight's upload {where_} could not be aborted (Ferry aborts the \
                     uploads of interrupted copies)"
                ),
            )
        })
    }
}

#[async_trait::async_trait]
impl Source for S3Store {
    fn describe(&self) -> String {
        format!(
            "s3://{}/{} at {}",
            self.bucket,
            self.prefix,
            self.endpoint.as_deref().unwrap_or("aws")
        )
    }

    fn full_key(&self, key: &str) -> String {
        self.full(key)
    }

    fn caps(&self) -> SourceCaps {
        SourceCaps {
            md5_etags: !self.kms_default,
            ranged_reads: true,
        }
    }

    fn list(&self, after: Option<String>, until: Option<String>) -> Listing {
        // Pages are fetched by a task of their own so listing runs ahead of the consumer
        // (pipelined), with at most a few pages buffered.
        let (tx, rx) =
            mpsc::channel::<Result<ObjectInfo, TransferError>>(2 * self.page_size as usize);
        let me = self.clone();
        tokio::spawn(async move {
            let start_after = after.as_ref().map(|a| me.full(a));
            let mut token: Option<String> = None;
            loop {
                let page = with_retry(&me.retry, "ListObjectsV2", |_| {
                    let me = &me;
                    let token = token.clone();
                    let start_after = start_after.clone();
                    async move {
                        me.limits.request().await;
                        me.client
                            .list_objects_v2()
                            .bucket(&me.bucket)
                            .prefix(&me.prefix)
                            .set_start_after(if token.is_none() { start_after } else { None })
                            .set_continuation_token(token)
                            .max_keys(me.page_size)
                            .send()
                            .await
                            .map_err(|e| TransferError::from_sdk("ListObjectsV2", &e))
                    }
                })
                .await;
                let page = match page {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(e.fatal())).await;
                        return;
                    }
                };
                for o in page.contents() {
                    let Some(full) = o.key() else { continue };
                    let Some(key) = full.strip_prefix(me.prefix.as_str()) else {
                        continue;
                    };
                    if me.hide_ferry && full.starts_with(ferry_core::plan::FERRY_DIR) {
                        continue;
                    }
                    if until.as_deref().is_some_and(|u| key > u) {
                        return;
                    }
                    let archived = matches!(
                        o.storage_class(),
                        Some(ObjectStorageClass::Glacier) | Some(ObjectStorageClass::DeepArchive)
                    );
                    let info = ObjectInfo {
                        key: key.to_string(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        modified: o.last_modified().and_then(to_chrono),
                        etag: o.e_tag().map(unquote),
                        archived,
                        invalid: None,
                    };
                    if tx.send(Ok(info)).await.is_err() {
                        return;
                    }
                }
                match (page.is_truncated(), page.next_continuation_token()) {
                    (Some(true), Some(t)) => token = Some(t.to_string()),
                    _ => return,
                }
            }
        });
        super::channel_stream(rx)
    }

    async fn head(&self, key: &str) -> Result<Option<(ObjectInfo, ObjectMeta)>, TransferError> {
        let full = self.full(key);
        let res = with_retry(&self.retry, "HeadObject", |_| async {
            self.limits.request().await;
            self.client
                .head_object()
                .bucket(&self.bucket)
                .key(&full)
                .send()
                .await
                .map_err(|e| TransferError::from_sdk("HeadObject", &e))
        })
        .await;
        match res {
            Ok(h) => {
                let info = ObjectInfo {
                    key: key.to_string(),
                    size: h.content_length().unwrap_or(0).max(0) as u64,
                    modified: h.last_modified().and_then(to_chrono),
                    etag: h.e_tag().map(unquote),
                    archived: matches!(
                        h.storage_class(),
                        Some(StorageClass::Glacier) | Some(StorageClass::DeepArchive)
                    ),
                    invalid: None,
                };
                let meta = meta_of!(h, info.modified);
                Ok(Some((info, meta)))
            }
            Err(e) if e.class == FailureClass::SourceVanished && !e.changed => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn get(
        &self,
        key: &str,
        offset: u64,
        len: u64,
        whole: bool,
        etag: Option<&str>,
        mut buf: Buffer,
    ) -> Result<Body, TransferError> {
        let full = self.full(key);
        self.limits.request().await;
        self.limits.bandwidth(len).await;
        let range = (!whole && len > 0).then(|| format!("bytes={}-{}", offset, offset + len - 1));
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .set_range(range)
            .set_if_match(etag.map(quote))
            .send()
            .await
            .map_err(|e| TransferError::from_sdk("GetObject", &e))?;
        let meta = meta_of!(out, out.last_modified().and_then(to_chrono));
        if let Some(cl) = out.content_length() {
            if cl as u64 != len {
                return Err(TransferError::new(
                    FailureClass::SourceVanished,
                    format!("GetObject: the object is {cl} bytes now, the listing said {len}"),
                )
                .retryable(true)
                .changed());
            }
        }
        let mut body = out.body;
        loop {
            match tokio::time::timeout(Duration::from_secs(60), body.next()).await {
                Err(_) => {
                    return Err(TransferError::new(
                        FailureClass::Network,
                        "GetObject: the body stalled for 60 s",
                    )
                    .with_code("Timeout"))
                }
                Ok(None) => break,
                Ok(Some(Ok(chunk))) => {
                    if buf.len() + chunk.len() > len as usize {
                        return Err(TransferError::short_body(
                            len,
                            (buf.len() + chunk.len()) as u64,
                        ));
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(Some(Err(e))) => {
                    return Err(TransferError::new(
                        FailureClass::Network,
                        format!("GetObject: reading the body failed: {e}"),
                    )
                    .with_code("IncompleteBody"))
                }
            }
        }
        if buf.len() as u64 != len {
            return Err(TransferError::short_body(len, buf.len() as u64));
        }
        Ok(Body {
            bytes: buf.freeze(),
            md5: None,
            meta,
        })
    }

    async fn probe(&self) -> Result<(), TransferError> {
        self.check(false, true).await
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[async_trait::async_trait]
impl Sink for S3Store {
    fn sink_caps(&self) -> SinkCaps {
        SinkCaps {
            max_object_size: Some(MAX_OBJECT),
            etags_are_md5: self.etags_are_md5(),
        }
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        meta: &ObjectMeta,
        md5: Option<&[u8]>,
    ) -> Result<Option<String>, TransferError> {
        self.limits.request().await;
        let len = body.len() as i64;
        let w = &self.write;
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .content_length(len)
            .set_content_md5(md5.map(b64))
            .body(ByteStream::from(body));
        let op = with_headers!(req, meta, w).customize();
        // The SDK gives a body without a Content-Type `application/octet-stream`; an object
        // that has none keeps none (the server may still give it its own default, as moto
        // does: `binary/octet-stream`).
        let op = if meta.content_type.is_none() {
            op.mutate_request(|r| {
                r.headers_mut().remove("content-type");
            })
        } else {
            op
        };
        let op = if self.sign_body(md5) {
            op
        } else {
            op.disable_payload_signing()
        };
        let out = op
            .send()
            .await
            .map_err(|e| TransferError::from_sdk("PutObject", &e))?;
        Ok(out.e_tag().map(unquote).filter(|_| md5_etag_of!(out)))
    }

    async fn create_upload(
        &self,
        key: &str,
        meta: &ObjectMeta,
        _size: u64,
    ) -> Result<Upload, TransferError> {
        let full = self.full(key);
        let w = &self.write;
        let out = with_retry(&self.retry, "CreateMultipartUpload", |_| async {
            self.limits.request().await;
            let req = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(&full);
            with_headers!(req, meta, w)
                .send()
                .await
                .map_err(|e| TransferError::from_sdk("CreateMultipartUpload", &e))
        })
        .await?;
        let id = out.upload_id().ok_or_else(|| {
            TransferError::new(
                FailureClass::Internal,
                "CreateMultipartUpload returned no upload id",
            )
        })?;
        Ok(Upload {
            key: key.to_string(),
            id: id.to_string(),
        })
    }

    async fn upload_part(
        &self,
        up: &Upload,
        number: i32,
        _offset: u64,
        body: Bytes,
        md5: Option<&[u8]>,
    ) -> Result<String, TransferError> {
        self.limits.request().await;
        let op = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(self.full(&up.key))
            .upload_id(&up.id)
            .part_number(number)
            .content_length(body.len() as i64)
            .set_content_md5(md5.map(b64))
            .body(ByteStream::from(body))
            .customize();
        let op = if self.sign_body(md5) {
            op
        } else {
            op.disable_payload_signing()
        };
        let out = op
            .send()
            .await
            .map_err(|e| TransferError::from_sdk("UploadPart", &e))?;
        out.e_tag().map(unquote).ok_or_else(|| {
            TransferError::new(FailureClass::Internal, "UploadPart returned no ETag")
        })
    }

    async fn complete_upload(
        &self,
        up: &Upload,
        etags: Vec<String>,
        size: u64,
        _meta: &ObjectMeta,
    ) -> Result<Option<String>, TransferError> {
        let n = etags.len();
        let parts: Vec<CompletedPart> = etags
            .iter()
            .enumerate()
            .map(|(i, e)| {
                CompletedPart::builder()
                    .part_number(i as i32 + 1)
                    .e_tag(quote(e))
                    .build()
            })
            .collect();
        let full = self.full(&up.key);
        with_retry(&self.retry, "CompleteMultipartUpload", |attempt| {
            let parts = parts.clone();
            let full = &full;
            async move {
                self.limits.request().await;
                let res = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(full)
                    .upload_id(&up.id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await;
                match res {
                    // (The answer has no SSE-C header: Ferry never writes with SSE-C.)
                    Ok(out) => Ok(out.e_tag().map(unquote).filter(|_| {
                        etag_is_md5(out.server_side_encryption().map(|s| s.as_str()), None)
                    })),
                    Err(err) => {
                        let e = TransferError::from_sdk("CompleteMultipartUpload", &err);
                        if attempt > 0 && e.code.as_deref() == Some("NoSuchUpload") {
                            if let Some((info, meta)) = self.head(&up.key).await? {
                                let parts_ok = info
                                    .etag
                                    .as_deref()
                                    .is_some_and(|t| t.ends_with(&format!("-{n}")));
                                if info.size == size && parts_ok {
                                    return Ok(info.etag.filter(|_| !meta.etag_not_md5));
                                }
                            }
                        }
                        Err(e)
                    }
                }
            }
        })
        .await
    }

    async fn abort_upload(&self, up: &Upload) {
        let full = self.full(&up.key);
        let res = with_retry(&self.retry, "AbortMultipartUpload", |_| async {
            self.client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&full)
                .upload_id(&up.id)
                .send()
                .await
                .map_err(|e| TransferError::from_sdk("AbortMultipartUpload", &e))
        })
        .await;
        if let Err(e) = res {
            if e.class != FailureClass::SourceVanished {
                tracing::warn!(key = %up.key, error = %e, "could not abort a multipart upload");
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<(), TransferError> {
        let full = self.full(key);
        with_retry(&self.retry, "DeleteObject", |_| async {
            self.limits.request().await;
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(&full)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| TransferError::from_sdk("DeleteObject", &e))
        })
        .await
    }

    async fn backup(&self, key: &str, to: &str, etag: Option<&str>) -> Result<(), TransferError> {
        let from = self.full(key);
        with_retry(&self.retry, "CopyObject", |_| async {
            self.limits.request().await;
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .key(to)
                .copy_source(copy_source(&self.bucket, &from))
                .set_copy_source_if_match(etag.map(quote))
                .metadata_directive(MetadataDirective::Copy)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| TransferError::from_sdk("CopyObject", &e))
        })
        .await
    }

    async fn probe_destination(&self, dry_run: bool) -> Result<(), TransferError> {
        self.check(true, dry_run).await
    }

    async fn open_uploads(&self) -> Result<Vec<OpenUpload>, TransferError> {
        self.uploads_under("").await
    }

    fn server_copy(&self, src: &dyn Source) -> Option<Arc<dyn ServerCopy>> {
        let src = src.as_any().downcast_ref::<S3Store>()?;
        self.same_account(src).then(|| {
            Arc::new(S3ServerCopy {
                src: src.clone(),
                dst: self.clone(),
            }) as Arc<dyn ServerCopy>
        })
    }

    /// Ferry's own folder (reports): its objects are written with [`WriteOptions::private`],
    /// never with the data objects' public ACL.
    fn folder(&self, folder: &str) -> Arc<dyn Sink> {
        Arc::new(S3Store {
            prefix: folder.to_string(),
            hide_ferry: false,
            write: self.write.private(),
            ..self.clone()
        })
    }
}

/// The largest object S3 stores.
pub const MAX_OBJECT: u64 = 5 * (1 << 40);

/// Copies between two buckets of one service and account.
struct S3ServerCopy {
    src: S3Store,
    dst: S3Store,
}

#[async_trait::async_trait]
impl ServerCopy for S3ServerCopy {
    async fn copy_object(
        &self,
        key: &str,
        etag: Option<&str>,
    ) -> Result<Option<String>, TransferError> {
        self.dst.copy_object_from(&self.src, key, etag).await
    }

    async fn copy_part(
        &self,
        up: &Upload,
        number: i32,
        offset: u64,
        len: u64,
        etag: Option<&str>,
    ) -> Result<String, TransferError> {
        self.dst
            .copy_part_from(&self.src, up, number, offset, len, etag)
            .await
    }
}

/// HeadBucket answers 404 and 403 without a code: name the problem for the user.
/// Keys the preflight lists to find one it can read.
const PREFLIGHT_KEYS: i32 = 20;

/// A preflight's refusal with the permission that is missing, when access was denied;
/// job-fatal either way.
fn missing_permission(mut e: TransferError, permission: &str, what: &str) -> TransferError {
    if e.class == FailureClass::AccessDenied {
        e.message = format!("{what}: {permission} is denied ({})", e.message);
    } else {
        e.message = format!("{what}: {}", e.message);
    }
    e.fatal()
}

fn bucket_error(mut e: TransferError, bucket: &str) -> TransferError {
    match e.code.as_deref() {
        Some("HTTP 404") | Some("NotFound") | Some("NoSuchBucket") => {
            e.class = FailureClass::NoSuchBucket;
            e.message = format!("bucket {bucket:?} does not exist ({})", e.message);
        }
        Some("HTTP 403") | Some("Forbidden") | Some("AccessDenied") => {
            e.class = FailureClass::AccessDenied;
            e.message = format!("access to bucket {bucket:?} denied: check the credentials and the bucket policy ({})", e.message);
        }
        _ => {}
    }
    e.fatal()
}

fn quote(etag: &str) -> String {
    format!("\"{etag}\"")
}

/// `bucket/key` with the key percent-encoded, as `x-amz-copy-source` wants it.
fn copy_source(bucket: &str, key: &str) -> String {
    let mut out = String::with_capacity(bucket.len() + key.len() + 8);
    out.push_str(bucket);
    out.push('/');
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_http_date(s: &str) -> Option<aws_sdk_s3::primitives::DateTime> {
    aws_sdk_s3::primitives::DateTime::from_str(s, aws_smithy_types::date_time::Format::HttpDate)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13, mode 2: the answers' encryption headers decide whether their ETag is an MD5.
    #[test]
    fn answers_say_whether_their_etag_is_an_md5() {
        use aws_sdk_s3::operation::get_object::GetObjectOutput;
        use aws_sdk_s3::operation::head_object::HeadObjectOutput;
        use aws_sdk_s3::operation::put_object::PutObjectOutput;
        let get = |sse: Option<ServerSideEncryption>, c: Option<&str>| {
            let out = GetObjectOutput::builder()
                .set_server_side_encryption(sse)
                .set_sse_customer_algorithm(c.map(str::to_string))
                .build();
            meta_of!(out, None).etag_not_md5
        };
        assert!(!get(None, None));
        assert!(!get(Some(ServerSideEncryption::Aes256), None));
        assert!(get(Some(ServerSideEncryption::AwsKms), None));
        assert!(get(Some(ServerSideEncryption::AwsKmsDsse), None));
        assert!(get(None, Some("AES256")));
        let head = HeadObjectOutput::builder()
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .build();
        assert!(meta_of!(head, None).etag_not_md5);
        let put = PutObjectOutput::builder()
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .build();
        assert!(!md5_etag_of!(put));
        let put = PutObjectOutput::builder().build();
        assert!(md5_etag_of!(put));
    }

    #[test]
    fn reports_never_get_a_public_acl() {
        let data = |acl: &str| WriteOptions {
            storage_class: Some(StorageClass::Glacier),
            sse: Some(ServerSideEncryption::AwsKms),
            kms_key_id: Some("k".into()),
            acl: Some(ObjectCannedAcl::from(acl)),
        };
        for public in [
            "public-read",
            "public-read-write",
            "authenticated-read",
            "aws-exec-read",
        ] {
            assert_eq!(data(public).private().acl, None, "{public}");
        }
        for kept in ["private", "bucket-owner-read", "bucket-owner-full-control"] {
            assert_eq!(
                data(kept).private().acl,
                Some(ObjectCannedAcl::from(kept)),
                "{kept}"
            );
        }
        let p = data("public-read").private();
        assert_eq!(p.storage_class, None);
        assert_eq!(p.sse, Some(ServerSideEncryption::AwsKms));
        assert_eq!(p.kms_key_id.as_deref(), Some("k"));
    }

    #[test]
    fn copy_source_encodes_the_key() {
        assert_eq!(copy_source("b", "a b/c+d%é"), "b/a%20b/c%2Bd%25%C3%A9");
    }
}
