//! Planning off the reconcile worker: planning lists (samples) the source, which can take
//! minutes, so it runs as a task of its own that stores the plan ConfigMap when done; the
//! reconcile only asks where it stands.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use futures::FutureExt;
use tokio::task::JoinHandle;

use super::decide::Planning;

enum Task {
    Running(JoinHandle<Result<(), String>>),
    Failed(String),
}

/// The plans being made, by job uid.
#[derive(Default)]
pub struct Plans {
    tasks: Mutex<HashMap<String, Task>>,
}

impl Plans {
    /// Where planning stands for the job `uid`.
    pub fn state(&self, uid: &str) -> Planning {
        let mut tasks = self.tasks.lock().unwrap();
        let Some(task) = tasks.get_mut(uid) else {
            return Planning::Idle;
        };
        let result = match task {
            Task::Failed(message) => {
                return Planning::Failed {
                    message: message.clone(),
                }
            }
            Task::Running(h) if !h.is_finished() => return Planning::Running,
            Task::Running(h) => h.now_or_never(),
        };
        match result {
            Some(Ok(Ok(()))) => {
                // The plan is stored: the next observation finds it.
                tasks.remove(uid);
                Planning::Idle
            }
            Some(Ok(Err(message))) => {
                *task = Task::Failed(message.clone());
                Planning::Failed { message }
            }
            Some(Err(e)) => {
                let message = format!("the planning task stopped: {e}");
                *task = Task::Failed(message.clone());
                Planning::Failed { message }
            }
            None => Planning::Running,
        }
    }

    /// Starts planning the job `uid` (replacing a failed attempt).
    pub fn start(
        &self,
        uid: &str,
        plan: impl Future<Output = Result<(), String>> + Send + 'static,
    ) {
        let mut tasks = self.tasks.lock().unwrap();
        if let Some(Task::Running(h)) = tasks.get(uid) {
            if !h.is_finished() {
                return;
            }
        }
        tasks.insert(uid.to_string(), Task::Running(tokio::spawn(plan)));
    }

    /// Stops planning the job `uid` (it is being deleted).
    pub fn cancel(&self, uid: &str) {
        if let Some(Task::Running(h)) = self.tasks.lock().unwrap().remove(uid) {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_plan_goes_from_running_to_idle_or_failed() {
        let plans = Plans::default();
        assert_eq!(plans.state("a"), Planning::Idle);
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        plans.start("a", async move { rx.await.unwrap() });
        assert_eq!(plans.state("a"), Planning::Running);
        tx.send(Err("listing failed".into())).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(
            plans.state("a"),
            Planning::Failed {
                message: "listing failed".into()
            }
        );
        assert!(
            matches!(plans.state("a"), Planning::Failed { .. }),
            "stays failed"
        );
        plans.start("a", async { Ok(()) });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(plans.state("a"), Planning::Idle);
    }
}
