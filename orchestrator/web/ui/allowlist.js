//! Egress allow-lists in the dashboard: the tenant's default list as a
//! line above its containers, with an editor for admins
//! (`PUT /v1/tenants/ID/allowed-domains`), and how a container's own list
//! is read from the launch form and shown in the list.
//!
//! * The default is what Standard containers reach when the launch names
//!   no list, and the most Strict ones may reach; an empty one is "none".
//! * The server checks every pattern (exact names or `*.example.com`) and
//!   its refusal is shown in its words; the editor keeps what was typed.

import { get, put, enc } from "./api.js";
import { h, fill, button } from "./dom.js";

/** The lines of `text` that are not blank, trimmed. */
export function lines(text) {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "");
}

/** A container's profile cell: the profile, and its allow-list if any. */
export function profileCell(c) {
  const list = c.allowedDomains || [];
  if (!list.length) return c.profile;
  return h(
    "span",
    { title: list.join("\n"), "data-domains": String(list.length) },
    `${c.profile} · ${list.length} domain${list.length === 1 ? "" : "s"}`,
  );
}

/** The tenant's default list, and the admin's editor of it. */
export function defaultsLine(ctx) {
  const shown = h("span", { id: "allowlist-current", class: "mono" }, "…");
  const editor = h("div", { hidden: true, class: "card", id: "allowlist-editor" });
  const show = (list) => {
    shown.textContent = list.length ? list.join(", ") : "none (Standard and Strict containers reach no domain)";
  };
  const load = async () => {
    const t = await get(`/v1/tenants/${enc(ctx.tenant.id)}`);
    if (ctx.alive()) show(t.allowedDomains || []);
    return t.allowedDomains || [];
  };
  const edit = async () => {
    if (!editor.hidden) {
      editor.hidden = true;
      return;
    }
    const text = h("textarea", { id: "allowlist-text", rows: 4, "aria-label": "the tenant's allowed domains, one per line" });
    text.value = (await load()).join("\n");
    const save = button(
      "Save",
      async () => {
        try {
          const t = await put(`/v1/tenants/${enc(ctx.tenant.id)}/allowed-domains`, { allowedDomains: lines(text.value) });
          show(t.allowedDomains || []);
          editor.hidden = true;
          ctx.notify(`The default allow-list of ${ctx.tenant.name} is saved.`, "info");
        } catch (err) {
          ctx.refused(err);
        }
      },
      { class: "primary", id: "allowlist-save" },
    );
    fill(editor, h("label", { for: "allowlist-text" }, "Allowed domains: one name or *.domain per line"), text, save);
    editor.hidden = false;
    text.focus();
  };
  load().catch((err) => ctx.refused(err));
  return [
    h(
      "p",
      { class: "row" },
      h("span", {}, "Default egress allow-list: "),
      shown,
      ctx.admin ? button("Edit", edit, { id: "allowlist-edit" }) : null,
    ),
    editor,
  ];
}
