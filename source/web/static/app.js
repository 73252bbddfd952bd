// The status pages: render what /api/events and /api/tasks/{id}/events send. No build step, no framework;
// every value from a row reaches the DOM as text (never as HTML).
"use strict";

const Tasks = (() => {
  const STATUSES = ["Queued", "In Progress", "Complete", "Failed", "Cancelled"];
  const VIDEO = /\.(mp4|webm|mov|mkv)$/i;
  const MEDIA = /\.(mp4|webm|mov|mkv|png|jpe?g|webp|gif)$/i;
  const canWrite = () => document.body.dataset.canWrite === "true";

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const slug = (status) => status.toLowerCase().replace(/\s+/g, "-");
  const badge = (status) => el("span", { class: `badge ${slug(status)}`, dataset: { status } }, status);
  const shortId = (id) => (id.length > 12 ? id.slice(0, 8) + "…" : id);
  const when = (text) => (text ? new Date(text).toLocaleString() : "");
  const seconds = (value) => (value === null || value === undefined ? "–" : `${value.toFixed(1)} s`);

  function progressBar(task) {
    const value = task.status === "Complete" ? 1 : task.progress || 0;
    return el("div", { class: "progress", role: "progressbar", "aria-valuenow": Math.round(value * 100),
                       dataset: { progress: value.toFixed(3) } },
              el("div", { class: "bar", style: `width:${(value * 100).toFixed(1)}%` }),
              el("span", {}, `${(value * 100).toFixed(value > 0 && value < 0.1 ? 1 : 0)}%`));
  }

  // the server's token for this page (source/web/csrf.py): a page of another origin cannot read it
  const csrfToken = () => document.querySelector('meta[name="csrf-token"]').content;

  async function act(taskId, verb) {
    const response = await fetch(`/api/tasks/${encodeURIComponent(taskId)}/${verb}`,
                                 { method: "POST", headers: { "X-CSRF-Token": csrfToken() } });
    if (!response.ok) alert((await response.json()).detail || response.statusText);
  }

  function actions(task) {
    if (!canWrite()) return [];
    const buttons = [];
    if (task.status === "Queued" || task.status === "In Progress") {
      buttons.push(el("button", { class: "cancel", onclick: () => act(task.id, "cancel") }, "Cancel"));
    }
    if (task.status === "Failed" || task.status === "Cancelled") {
      buttons.push(el("button", { class: "retry", onclick: () => act(task.id, "retry") }, "Retry"));
    }
    return buttons;
  }

  function media(task, { thumbnail }) {
    const id = encodeURIComponent(task.id);
    const output = task.output_location || "";
    const isVideo = VIDEO.test(output);
    if (!thumbnail) {
      return isVideo
        ? el("video", { src: `/api/tasks/${id}/output`, controls: true, loop: true, class: "output" })
        : el("img", { src: `/api/tasks/${id}/output`, class: "output", alt: "output" });
    }
    const img = el("img", { src: `/api/tasks/${id}/thumbnail`, class: "thumb", alt: task.task_type,
                            loading: "lazy", dataset: { taskId: task.id } });
    if (!isVideo) return img;
    // No thumbnail (a Storage video is not rendered here): the paused video shows its own first frame.
    img.addEventListener("error", () => img.replaceWith(
      el("video", { src: `/api/tasks/${id}/output`, preload: "metadata", muted: true, class: "thumb" })));
    // Videos play on hover or tap: the <video> loads only then.
    const frame = el("div", { class: "player" }, img);
    const play = () => {
      if (frame.querySelector("video")) return;
      const video = el("video", { src: `/api/tasks/${id}/output`, muted: true, loop: true, playsinline: true,
                                  autoplay: true, class: "thumb" });
      video.muted = true;
      frame.append(video);
      frame.classList.add("playing");
    };
    frame.addEventListener("mouseenter", play);
    frame.addEventListener("click", play);
    frame.addEventListener("mouseleave", () => {
      frame.querySelector("video")?.remove();
      frame.classList.remove("playing");
    });
    return frame;
  }

  function renderOverview(data) {
    const counts = document.getElementById("counts");
    counts.replaceChildren(...STATUSES.map((status) =>
      el("div", { class: `card ${slug(status)}`, dataset: { status } },
         el("b", { class: "count" }, data.by_status[status] ?? 0), el("span", {}, status))));

    const hour = data.last_hour;
    document.getElementById("hour").replaceChildren(
      el("div", { class: "card" }, el("b", {}, seconds(hour.pickup_p50_s)), el("span", {}, "pickup p50 (1 h)")),
      el("div", { class: "card" }, el("b", {}, seconds(hour.pickup_p90_s)), el("span", {}, "pickup p90 (1 h)")),
      el("div", { class: "card" }, el("b", {}, hour.completed_per_hour), el("span", {}, "completed (1 h)")),
      el("div", { class: "card" }, el("b", {}, (hour.finished.Failed || 0)), el("span", {}, "failed (1 h)")));

    const types = Object.entries(data.active_by_type).map(([type, byStatus]) =>
      `${type}: ${Object.entries(byStatus).map(([s, n]) => `${n} ${s}`).join(", ")}`);
    document.getElementById("by-type").textContent = types.length ? `Active by type — ${types.join(" · ")}` : "";

    const byId = Object.fromEntries([...data.tasks, ...data.running].map((t) => [t.id, t]));
    const workers = data.workers.map((w) => {
      const task = w.current_task_id ? byId[w.current_task_id] : null;
      const stats = w.stats || {};
      const state = w.alive ? "alive" : w.status === "stopped" ? "stopped" : "dead";
      return el("div", { class: `worker ${state}`, dataset: { workerId: w.id } },
        el("div", { class: "row" }, el("b", {}, w.id), el("span", { class: `badge ${state}` }, state)),
        el("div", { class: "muted" }, w.gpu_name ? `${w.gpu_name} ${w.gpu_memory_gb ?? ""} GiB` : "no GPU",
           ` · model ${w.resident_model || "–"} · heard ${when(w.last_heartbeat)}`),
        w.current_task_id
          ? el("div", { class: "row" }, el("a", { href: `/tasks/${encodeURIComponent(w.current_task_id)}` },
                                           shortId(w.current_task_id)),
               task ? progressBar(task) : null)
          : el("div", { class: "muted" }, "idle"),
        el("div", { class: "muted" },
           `done ${stats.tasks_completed ?? 0} · failed ${stats.tasks_failed ?? 0} · ` +
           `cancelled ${stats.tasks_cancelled ?? 0} · loads ${stats.model_loads ?? 0}`));
    });
    document.getElementById("workers").replaceChildren(
      ...(workers.length ? workers : [el("p", { class: "muted" }, "No worker has registered.")]));

    const outputs = data.tasks.filter((t) => t.status === "Complete" && MEDIA.test(t.output_location || ""))
      .slice(0, 12);
    const gallery = document.getElementById("gallery");
    const galleryKey = outputs.map((t) => `${t.id}:${t.output_location}`).join("|");
    // Rebuilt only when the set of outputs changes, so a video playing on hover keeps playing.
    if (gallery.dataset.key !== galleryKey) {
      gallery.dataset.key = galleryKey;
      gallery.replaceChildren(...(outputs.length ? outputs.map((t) =>
        el("figure", { dataset: { taskId: t.id } }, media(t, { thumbnail: true }),
           el("figcaption", {}, el("a", { href: `/tasks/${encodeURIComponent(t.id)}` }, t.task_type),
              " ", t.prompt || ""))) : [el("p", { class: "muted" }, "No outputs yet.")]));
    }

    renderRows(document.querySelector("#tasks tbody"), data.tasks);
  }

  // Rows keep their elements across updates (only the cells that changed are rebuilt), so a Cancel
  // button is never swapped out under a pointer between press and release.
  function renderRows(tbody, tasks) {
    const existing = new Map([...tbody.children].map((tr) => [tr.dataset.taskId, tr]));
    tbody.replaceChildren(...tasks.map((t) => {
      let tr = existing.get(t.id);
      if (!tr) {
        tr = el("tr", { dataset: { taskId: t.id } },
                el("td", {}, el("a", { href: `/tasks/${encodeURIComponent(t.id)}`, title: t.id }, shortId(t.id))),
                el("td", {}, t.task_type), el("td"), el("td"), el("td", { class: "muted" }, when(t.created_at)),
                el("td"));
      }
      const [, , statusCell, progressCell, , actionCell] = tr.children;
      if (tr.dataset.status !== t.status) {
        tr.dataset.status = t.status;
        statusCell.replaceChildren(badge(t.status));
        actionCell.replaceChildren(...actions(t));
      }
      const bar = progressBar(t);
      if (progressCell.firstChild?.dataset.progress !== bar.dataset.progress) progressCell.replaceChildren(bar);
      return tr;
    }));
  }

  function field(label, value) {
    if (value === null || value === undefined || value === "") return null;
    return [el("dt", {}, label), el("dd", {}, value)];
  }

  function renderTask(task) {
    const body = document.getElementById("task-body");
    document.getElementById("task-missing").hidden = task !== null;
    if (task === null) return body.replaceChildren();
    const result = task.result || {};
    body.replaceChildren(...sections(
      el("div", { class: "row" }, badge(task.status), el("b", {}, task.task_type), progressBar(task), actions(task)),
      task.error_message ? el("pre", { class: "error" }, task.error_message) : null,
      task.status === "Complete" && task.output_location ? media(task, { thumbnail: false }) : null,
      el("dl", {},
         field("created", when(task.created_at)), field("started", when(task.generation_started_at)),
         field("finished", when(task.generation_processed_at)), field("worker", task.worker_id),
         field("attempts", `${task.attempts} of ${task.max_attempts}`), field("priority", task.priority),
         field("depends on", task.dependant_on), field("parent", task.parent_task_id),
         field("output", task.output_location)),
      el("h2", {}, "Params"), el("pre", { class: "json" }, JSON.stringify(task.params, null, 2)),
      Object.keys(result).length ? [el("h2", {}, "Result"),
                                    el("pre", { class: "json" }, JSON.stringify(result, null, 2))] : null,
      task.children && task.children.length ? [el("h2", {}, "Children"), el("ul", { class: "tree" },
        task.children.map((c) => el("li", { dataset: { taskId: c.id, status: c.status } }, badge(c.status), " ",
          el("a", { href: `/tasks/${encodeURIComponent(c.id)}` }, c.child_key || shortId(c.id)),
          ` ${c.task_type} `, progressBar(c))))] : null));
  }

  // The page's blocks in order, the absent (null) ones left out.
  const sections = (...blocks) => blocks.flat().filter((block) => block !== null && block !== undefined);

  function follow(url, event, render) {
    const live = document.getElementById("live");
    const source = new EventSource(url);
    source.addEventListener(event, (message) => render(JSON.parse(message.data)));
    source.addEventListener("open", () => { live.textContent = "live"; live.classList.add("on"); });
    source.addEventListener("error", () => { live.textContent = "reconnecting…"; live.classList.remove("on"); });
  }

  function submitForm() {
    const form = document.getElementById("submit");
    if (!form) return;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const out = document.getElementById("submit-result");
      let params;
      try { params = JSON.parse(form.params.value || "{}"); } catch (error) {
        out.textContent = `params: ${error.message}`;
        return;
      }
      const response = await fetch("/api/tasks", {
        method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
        body: JSON.stringify({ task_type: form.task_type.value, params, priority: Number(form.priority.value) }),
      });
      const body = await response.json();
      out.textContent = response.ok ? `queued ${body.id}`
        : (Array.isArray(body.detail) ? body.detail.map((d) => `${d.loc.slice(1).join(".")}: ${d.msg}`).join("; ")
                                      : body.detail);
    });
  }

  return {
    index() {
      submitForm();
      follow("/api/events", "overview", renderOverview);
    },
    task(taskId) {
      follow(`/api/tasks/${encodeURIComponent(taskId)}/events`, "task", renderTask);
    },
  };
})();
