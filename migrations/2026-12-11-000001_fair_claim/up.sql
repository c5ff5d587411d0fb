-- Fair share between tenants: the claim takes tenants in turn within each
-- priority. The pending index gains the tenant after the priority, so the
-- claim can find the tenants waiting at a priority with one probe each (a
-- skip scan) and read each one's due tasks in (run_at, id) order.
DROP INDEX tasks_pending_due_idx;
CREATE INDEX tasks_pending_due_idx ON tasks (priority, tenant, run_at, id) WHERE status = 'pending';

-- Turns with every claim: which tenant comes first when tenants tie for a
-- place in the batch. A sequence is neither locked nor transactional, so
-- concurrent claims never wait on it.
CREATE SEQUENCE task_claim_turn CYCLE;
