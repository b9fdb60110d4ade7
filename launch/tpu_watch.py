"""`launch/tpu.py watch`: babysits a run on a Cloud TPU slice until it ends, creating the
slice, recreating it after a preemption and rerunning.

`watch` packs the checkout once, then polls the slice and the workers, printing worker 0's
latest log line as it changes. A slice that does not exist yet is created and the run
started (that spends no retry); so is the run on a slice that holds nothing, or only an
ended run of another job. A live run of another job is refused, and so is a slice of
another accelerator type than `--accelerator-type`: both are left as they are. A PREEMPTED,
SUSPENDED or FAILED slice, or a worker that exited with status 75 (the run saved a
checkpoint on SIGTERM), is deleted, created again and rerun, and the run resumes from its
workdir: up to `--retries` times in all (the count is never reset). A SUSPENDING slice's
workers got SIGTERM and are saving a checkpoint: it is left alone until it is SUSPENDED, no
worker's run is alive, or SUSPEND_GRACE_S have passed. Status 0 on every worker (given only
after the final checkpoint is saved) ends the watch; any other status is a real failure
(bad config, non-finite loss): it prints the worker's last log line and stops without
retrying. Workers that miss `--missed-polls` status polls in a row end the watch.
`--autodelete` deletes the slice whenever the watch ends (after printing a failed worker's
last log lines), so nothing is left billing; without it the watch's last line (after its
error line, if any) says how to delete it. A delete that does not finish (DeleteStuck) ends
the watch without another try.
"""

import time

from tpu_cloud import LOST
from tpu_errors import Busy, DeleteStuck, Error, Mismatch
from tpu_worker import PREEMPTED_EXIT_CODE, Worker, job_tag

NOT_SEEN = "not seen"  # the state of a slice not described yet
SUSPEND_GRACE_S = 300  # what a SUSPENDING slice's workers get to save a checkpoint


# What JAX logs before it aborts a process (status 134) whose cluster lost another process
# (killed, its host gone, it stopped sending heartbeats): not this run's failure, so not a
# real one; the run is rerun as lost.
PEER_LOST = (
  "JAX distributed service detected fatal errors",
  "tasks are unhealthy (stopped sending heartbeats)",
)


def peer_lost(worker) -> bool:
  """Whether a worker's failed run was stopped by JAX for the loss of another process."""
  return any(mark in line for line in (*worker.tail, worker.line) for mark in PEER_LOST)


class Watch:
  """One `watch`: the slice's state as last seen, the retries spent, the polls missed."""

  def __init__(self, cloud):
    self.cloud, self.args = cloud, cloud.args
    cloud.stamped = True
    self.job = job_tag(cloud.args)
    self.state = NOT_SEEN  # None: it does not exist
    self.retries = 0
    self.missed = 0  # status polls in a row that some worker did not answer
    self.progress = ""

  def run(self):
    """Polls until the run ends: 0 when it finished; an Error when it failed."""
    first = True
    while True:
      state = self.observe()
      if state == "SUSPENDING":
        state = self.wait_while_suspending()
      if first and state is None:  # never created: not a preemption, so no retry is spent
        self.cloud.say("creating it")
        self.bring_up()
      elif state is None or state in LOST:
        self.recreate(f"the slice is {state or 'gone'}")
      elif state == "ACTIVE" and (outcome := self.check_workers()):
        if outcome == "finished":
          return 0
        self.recreate(outcome)
      else:
        time.sleep(self.args.poll * 2 ** min(self.missed, 3))
      first = False

  def observe(self):
    """The slice's state, printed when it changed; a slice of another accelerator type is
    a Mismatch (one describe tells both).
    """
    state = self.cloud.existing()
    if state != self.state:
      self.cloud.say(state or "not found")
      self.state = state
    return state

  def wait_while_suspending(self):
    """A SUSPENDING slice's workers got SIGTERM and are saving a checkpoint, which a delete
    would cut short: waits until the slice is in another state (returned), no worker's run
    is alive, or SUSPEND_GRACE_S have passed (then "SUSPENDING").
    """
    self.cloud.say(
      f"waiting up to {SUSPEND_GRACE_S} s for the workers to save a checkpoint before recreating it"
    )
    deadline = time.time() + SUSPEND_GRACE_S
    while True:
      poll = self.cloud.statuses()  # a worker that does not answer is not counted as missed
      if poll.failure is None and all(w.status != "running" for w in poll.workers):
        self.cloud.say("no worker's run is alive any more")
        return "SUSPENDING"
      if time.time() >= deadline:
        self.cloud.say(f"still SUSPENDING after {SUSPEND_GRACE_S} s: waiting no longer")
        return "SUSPENDING"
      time.sleep(self.args.poll)
      if (state := self.observe()) != "SUSPENDING":
        return state

  def bring_up(self):
    """Creates the slice, waits for ACTIVE and starts the run."""
    self.cloud.create()
    self.state = "CREATED"  # it exists, whatever its state
    self.cloud.wait_active()
    self.state = "ACTIVE"
    self.start()

  def start(self):
    """Starts the run on every worker; its progress is printed afresh."""
    self.cloud.start()
    self.progress = ""

  def recreate(self, verdict):
    """Deletes the slice (if it exists), creates it again and reruns: one retry."""
    a = self.args
    if self.retries >= a.retries:
      raise Error(f"{verdict} and --retries {a.retries} are used up: not recreating it")
    self.retries += 1
    self.cloud.say(f"{verdict}: recreating it (retry {self.retries} of {a.retries})")
    if self.state is not None:
      self.cloud.delete()
      self.state = None
    self.bring_up()

  def check_workers(self):
    """Polls the workers of an ACTIVE slice: "finished", a reason to recreate the slice,
    or None (running; or started now). A failed run is an Error.
    """
    poll = self.cloud.statuses()
    self.note_answers(poll)
    workers = [self.as_ours(w) for w in poll.workers]
    if outcome := self.outcome(workers, complete=poll.failure is None):
      return outcome
    if poll.failure is None and all(w.status == "none" for w in workers):
      self.start()  # nothing of this job on the slice yet
    elif poll.failure is not None and self.missed >= self.args.missed_polls:
      raise Error(self.silent_message(poll.failure))
    elif any(w.status == "running" for w in workers):
      self.show_progress()
    return None

  def silent_message(self, failure):
    """Why the watch gives up on a silent worker, and what to do: it depends on whether
    the slice is deleted (--autodelete) or left up.
    """
    a = self.args
    gave_up = f"a worker of {a.name} did not answer {self.missed} status polls in a row ({failure})"
    if a.autodelete:
      return f"{gave_up}: --autodelete deletes the slice; watch again to recreate it and resume"
    ssh = f"gcloud compute tpus tpu-vm ssh {a.name} --zone={a.zone} --worker=all"
    return f"{gave_up}: check it (`{ssh}`), then watch again or `down` it"

  def note_answers(self, poll):
    """Counts the polls missed in a row; says so once per streak."""
    if poll.failure is None:
      if self.missed:
        self.cloud.say("every worker answers again")
      self.missed = 0
      return
    self.missed += 1
    if self.missed == 1:
      self.cloud.say(
        f"a worker did not answer ({poll.failure}); polling on, up to "
        f"--missed-polls {self.args.missed_polls} in a row"
      )

  def as_ours(self, worker):
    """The worker's run as one of this job: another job's ended run counts as none."""
    if worker.job == self.job:
      return worker
    if worker.status == "running":
      raise Busy(self.cloud.busy_message("another job's run"))
    return Worker("none", worker.job, worker.line)

  def outcome(self, workers, complete):
    """What the answering workers' runs say: "finished", a reason to recreate, or None."""
    codes = {w.status for w in workers}
    failed = [
      w for w in workers if w.status.isdigit() and int(w.status) not in (0, PREEMPTED_EXIT_CODE)
    ]
    if real := [w for w in failed if not peer_lost(w)]:
      self.fail(real)
    if failed:  # JAX stopped them: another process of the run died (its log says which)
      statuses = ", ".join(sorted({w.status for w in failed}))
      return f"a process of the run died, and JAX stopped the others (status {statuses})"
    if workers and codes == {"0"}:
      which = "every worker" if complete else "every worker that answered"
      self.cloud.say(f"the run finished (status 0 on {which})")
      return "finished"
    if str(PREEMPTED_EXIT_CODE) in codes:
      return f"a worker was preempted (status {PREEMPTED_EXIT_CODE})"
    if "lost" in codes:
      return "a run was lost"
    return None

  def fail(self, failed):
    """Raises the failure of a worker's run; before --autodelete, prints its log's end."""
    worker = sorted(failed, key=lambda w: not w.line.startswith("error:"))[0]  # says why
    if self.args.autodelete and worker.tail:
      self.cloud.say("the failed worker's last log lines (--autodelete deletes the slice):")
      for line in worker.tail:
        print(f"  {line}", flush=True)
      hint = "its log's last lines are above"
    else:
      hint = f"`{self.cloud.command_line('logs', '--no-follow')}` shows the whole log"
    raise Error(
      f"the run failed on a worker with exit status {worker.status} (not retried): "
      f"{worker.line}; {hint}"
    )

  def show_progress(self):
    """Prints worker 0's latest log line when it changed."""
    line = self.cloud.progress()
    if line and line != self.progress:
      self.cloud.say(f"worker 0: {line}")
      self.progress = line

  def finish(self, ended, error=None):
    """Deletes the slice (--autodelete), else says it is still up: the watch's last line,
    after the `error` it ends with (an Error's afterword, printed after its line). `ended`:
    the watch ended as it should; otherwise a failure to delete is printed, not raised over
    the first error.
    """
    down = self.cloud.command_line("down")
    if not self.args.autodelete:
      if self.state not in (None, NOT_SEEN):
        line = self.cloud.line(f"the slice is still up, and billed: `{down}` deletes it")
        if isinstance(error, Error):
          error.afterword = line
        else:
          print(line, flush=True)
      return
    try:
      self.cloud.delete()
    except Error as e:
      if ended:
        raise
      self.cloud.say(f"deleting it failed too ({e}): `{down}`")


def watch(cloud):
  """Babysits the run until it ends; returns the exit status."""
  if cloud.dry_run:  # what a watch runs for a slice that does not exist yet
    cloud.state()
    cloud.create()
    cloud.start()
    return 0
  cloud.pack()  # now: later edits of the checkout are not shipped to a recreated slice
  watching = Watch(cloud)
  try:
    status = watching.run()
  except (Busy, Mismatch, DeleteStuck):
    raise  # not this watch's slice to delete, or not deletable now
  except BaseException as e:
    watching.finish(ended=False, error=e)
    raise
  watching.finish(ended=True)
  return status
