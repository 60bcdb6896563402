//! What Ferry's operator, `ferry run` and the transfer engine share, with no Kubernetes and
//! no S3 client in it:
//!
//! - [`plan`]: the job plan an agent runs (shard ranges, the resolved transfer settings);
//! - [`live`]: the settings that may change while a job runs (rates, concurrency, memory);
//! - [`planning`]: what the planner is asked and what it answers (checks, then the plan);
//! - [`collect`]: the URL-list collector's settings and progress;
//! - [`stores`]: where each side is (a serializable store configuration) and its secrets;
//! - [`database`]: a database source's table, columns and write-back (plain data);
//! - [`progress`]: the progress record of a shard (checkpoint, counters, failure classes);
//! - [`select`]: which objects a job selects;
//! - [`policy`]: the overwrite and verification policies;
//! - [`audit`]: the job's mode (copy or check) and the dry run's inventory.
//!
//! The operator translates a validated `MigrationJob` spec into these types once; the engine
//! reads nothing else.

pub mod audit;
pub mod collect;
pub mod credentials;
pub mod database;
pub mod live;
pub mod plan;
pub mod planning;
pub mod policy;
pub mod progress;
pub mod select;
pub mod stores;

pub use audit::{Inventory, InventoryChecksums, Mode};
pub use live::LiveLimits;
pub use plan::{
    DeleteSettings, FailureBudget, JobPlan, MultipartSettings, ShardRange, Side, Stage, Transfer,
};
pub use policy::{OverwritePolicy, VerifyMode};
pub use progress::{
    Checkpoint, Counters, ErrorSample, FailureClass, PendingUpload, ProgressStore, ShardProgress,
    ShardState, Totals, Transport,
};
pub use select::{PatternError, Selection, Selector};
pub use stores::{JobCredentials, SideSecrets, StoreConfig};
