// Sign in, or create an account.

import { busy, h, notice } from "../../js/ui.js";
import { signIn, signUp } from "../session.js";

export async function render(main, { route }) {
  let creating = false;
  const message = h("div");
  const title = h("h1", { id: "signin-title" }, "Sign in");
  const email = h("input", { id: "email", type: "email", autocomplete: "username", required: true });
  const name = h("input", { id: "name", autocomplete: "name" });
  const password = h("input", {
    id: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const nameField = h("div", { class: "field", hidden: true }, h("label", { for: "name" }, "Your name"), name);
  const submit = h("button", { type: "submit", class: "primary", id: "signin-submit" }, "Sign in");
  const hint = h("p", { class: "muted" });
  const toggle = h("button", { type: "button", id: "signin-toggle", onclick: () => mode(!creating) });

  function mode(create) {
    creating = create;
    title.textContent = create ? "Create an account" : "Sign in";
    submit.textContent = create ? "Create account" : "Sign in";
    toggle.textContent = create ? "I have an account" : "Create an account";
    nameField.hidden = !create;
    name.required = create;
    password.autocomplete = create ? "new-password" : "current-password";
    hint.textContent = create ? "Passwords need at least 8 characters." : "";
    notice(message, null);
  }

  const form = h(
    "form",
    {
      class: "panel stack",
      "aria-labelledby": "signin-title",
      onsubmit: (event) => {
        event.preventDefault();
        busy(submit, message, async () => {
          if (creating) await signUp(email.value.trim(), name.value.trim(), password.value);
          else await signIn(email.value.trim(), password.value);
          password.value = "";
          await route();
        });
      },
    },
    title,
    message,
    h("div", { class: "field" }, h("label", { for: "email" }, "Email"), email),
    nameField,
    h("div", { class: "field" }, h("label", { for: "password" }, "Password"), password),
    hint,
    h("div", { class: "row spread" }, toggle, submit),
  );
  mode(false);
  main.append(h("div", { class: "narrow" }, form));
}
