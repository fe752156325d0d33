// The payout job page, live: progress bar, counters, rate and ETA from the job API every
// 2 seconds until the job reaches a final state. When Pusher is configured the page follows
// the private-staff channel instead, and falls back to polling if the socket closes.
(function () {
  "use strict";
  const box = document.getElementById("payout-progress");
  if (!box) return;
  const ACTIVE = ["queued", "expanding", "running", "paused"];
  const jobId = Number(box.dataset.job);
  const $ = (id) => document.getElementById(id);
  let timer = null;

  function show(job) {
    $("payout-progress-bar").value = job.progress_percent;
    $("payout-progress-percent").textContent = job.progress_percent + "%";
    $("payout-status").textContent = job.status;
    $("payout-completed").textContent = job.completed;
    $("payout-total").textContent = job.total_entries;
    $("payout-failed").textContent = job.failed;
    $("payout-cancelled").textContent = job.cancelled;
    $("payout-paid-amount").textContent = job.paid_amount;
    $("payout-rate").textContent = job.rate === null ? "-" : job.rate;
    $("payout-eta").textContent = job.eta_seconds === null ? "-" : job.eta_seconds + " s";
    // The status table's exact counters follow the job too.
    for (const [status, count] of [["completed", job.completed], ["failed", job.failed], ["cancelled", job.cancelled]]) {
      const cell = document.querySelector(".count-" + status);
      if (cell) cell.textContent = count;
    }
    $("payout-error").hidden = !job.error;
    $("payout-error-text").textContent = job.error || "";
    // Only the controls that apply to the job's new state stay visible.
    document.querySelectorAll(".job-control").forEach((li) => {
      li.hidden = !li.dataset.states.split(" ").includes(job.status);
    });
    if (!ACTIVE.includes(job.status)) stop("final state: " + job.status);
  }

  function stop(why) {
    if (timer !== null) clearInterval(timer);
    timer = null;
    $("payout-live").textContent = "live updates stopped (" + why + ")";
  }

  async function poll() {
    try {
      const response = await fetch(box.dataset.url, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (response.ok) show(await response.json());
    } catch (err) {
      // A dropped request is retried by the next tick.
    }
  }

  function startPolling() {
    if (timer === null) timer = setInterval(poll, 2000);
    $("payout-live").textContent = "live: polling every 2 s";
  }

  function csrfToken() {
    const match = document.cookie.match(/csrftoken=([^;]+)/);
    return match ? match[1] : "";
  }

  // Pusher's protocol (version 7) over a plain WebSocket: subscribe to private-staff with a
  // signature from /api/pusher/auth, then take payout_job.progress events for this job.
  function follow(url, authUrl) {
    const socket = new WebSocket(url);
    socket.onmessage = async (message) => {
      const frame = JSON.parse(message.data);
      const data = typeof frame.data === "string" ? JSON.parse(frame.data) : frame.data;
      if (frame.event === "pusher:connection_established") {
        const response = await fetch(authUrl, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
          body: JSON.stringify({ socket_id: data.socket_id, channel_name: "private-staff" }),
        });
        if (!response.ok) return socket.close();
        const auth = await response.json();
        socket.send(JSON.stringify({
          event: "pusher:subscribe",
          data: { channel: "private-staff", auth: auth.auth },
        }));
      } else if (frame.event === "pusher_internal:subscription_succeeded") {
        if (timer !== null) clearInterval(timer);
        timer = null;
        $("payout-live").textContent = "live: following private-staff";
        poll();
      } else if (frame.event === "payout_job.progress" && data.id === jobId) {
        // The event carries the job's figures without timestamps or error: poll once at the end.
        show({ error: "", ...data });
        if (!ACTIVE.includes(data.status)) poll();
      }
    };
    socket.onclose = () => {
      if (ACTIVE.includes($("payout-status").textContent)) startPolling();
    };
  }

  if (!ACTIVE.includes($("payout-status").textContent)) {
    stop("final state: " + $("payout-status").textContent);
    return;
  }
  startPolling();
  if (box.dataset.pusherUrl && "WebSocket" in window) follow(box.dataset.pusherUrl, box.dataset.pusherAuth);
})();
