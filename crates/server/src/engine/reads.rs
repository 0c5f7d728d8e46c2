//! What the engine shows: reads of the state, each answered only once what it saw is durable
//! (see the module docs of [`super`]).

use locksmith_core::{
    AuditRecord, Census, DeadProcess, HoldView, LeaseId, LeaseView, LockTable, Now, ResourceView,
};
use locksmith_store::{AuditQuery, StoreError};

use super::{Engine, State, lock};

impl Engine {
    /// Reads the state, and answers once everything the read saw is durable: `read` runs under
    /// the state lock, an empty batch is submitted before the lock is let go, and the answer
    /// waits for it. Refused once storage has failed — or if it fails before the barrier is
    /// through: what was read may then never reach the disk.
    pub async fn read<T>(&self, read: impl FnOnce(&State, Now) -> T) -> Result<T, StoreError> {
        let (seen, ticket) = {
            let state = lock(&self.inner.state);
            if let Some(failure) = self.refusal() {
                return Err(failure);
            }
            let seen = read(&state, self.inner.clock.now());
            (seen, self.inner.committer.submit(Vec::new()))
        };
        match ticket.wait().await {
            Ok(()) => Ok(seen),
            // Whatever this barrier was answered, the latched failure is what the read meets.
            Err(error) => Err(self.refusal().unwrap_or(error)),
        }
    }

    /// [`read`](Self::read) of the lock table.
    pub async fn view<T>(&self, read: impl FnOnce(&LockTable, Now) -> T) -> Result<T, StoreError> {
        self.read(|state, now| read(&state.locks, now)).await
    }

    /// Every held or awaited resource; durable (see [`read`](Self::read)).
    pub async fn resources(&self) -> Result<Vec<ResourceView>, StoreError> {
        self.view(|t, now| t.resources(now)).await
    }

    /// One page of [`resources`](Self::resources) (see `LockTable::resources_page`): the table
    /// is held for one pass over the names, and only the page's views are built.
    pub async fn resources_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        node: Option<&str>,
    ) -> Result<(Vec<ResourceView>, bool), StoreError> {
        self.view(|t, now| t.resources_page(now, prefix, after, limit, node))
            .await
    }

    /// The plainly HOT resources counted, every other one's view, and every hold: what
    /// `/v1/status` and the metrics need, in one pass under the table lock that builds nothing
    /// for the HOT ones, and one barrier.
    pub async fn census(&self) -> Result<(Census, Vec<HoldView>), StoreError> {
        self.view(|t, now| (t.census(now), t.holds(now))).await
    }

    /// One resource; durable (see [`read`](Self::read)).
    pub async fn resource(&self, name: &str) -> Result<ResourceView, StoreError> {
        self.view(|t, now| t.resource(name, now)).await
    }

    /// A live lease, without renewing it; durable (see [`read`](Self::read)).
    pub async fn lease(&self, lease: LeaseId) -> Result<Option<LeaseView>, StoreError> {
        self.view(|t, _| t.lease(lease)).await
    }

    /// Every hold; durable (see [`read`](Self::read)).
    pub async fn holds(&self) -> Result<Vec<HoldView>, StoreError> {
        self.view(|t, now| t.holds(now)).await
    }

    /// The live leases held on `node` under `boot_id` in PID namespace `pid_ns` (what a local
    /// prober there checks; it shows them to nobody, so no barrier). None once storage has
    /// failed.
    pub fn local_leases(&self, node: &str, boot_id: &str, pid_ns: &str) -> Vec<DeadProcess> {
        let state = lock(&self.inner.state);
        if self.inner.committer.failure().is_some() {
            return Vec::new();
        }
        state.locks.local_leases(node, boot_id, pid_ns)
    }

    /// Queries the durable audit log (ordered after every earlier commit).
    pub async fn audit(&self, query: AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.committer.query_audit(query).wait().await
    }
}
