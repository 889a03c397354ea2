/* Enhances {% approval_form %} forms: sends them with fetch instead of a page load.
 *
 * The forms work without this script (plain POST, then a redirect back with a message). With it,
 * a form mirrors useInputStreamSend's states on its root element:
 *   data-ready                 the run is known and the page can send (isReady)
 *   data-state="ready"         idle
 *   data-state="sending"       a send is in flight (isLoading): buttons disabled, aria-busy="true",
 *                              the role="status" element says "Sending…" (data-sending-message)
 *   data-state="sent"          the run received the input; the status element says so
 *   data-state="error"         the send failed; the role="alert" element says why (error)
 * and dispatches bubbling CustomEvents on the form: "trigger:sent" (detail: runId, streamId,
 * data, message) and "trigger:error" (detail: runId, streamId, status, message, fields).
 * Configured only by data-* attributes; no globals; forms added to the page later work too.
 * See docs/input-streams.md.
 */
(function () {
  "use strict";

  var FORM_SELECTOR = "form[data-trigger-input]";

  function controls(form) {
    return form.querySelectorAll("button, input[type=submit], input[type=image]");
  }

  function setDisabled(form, disabled) {
    var list = controls(form);
    for (var i = 0; i < list.length; i++) {
      list[i].disabled = disabled;
    }
  }

  function markReady(form) {
    if (form.hasAttribute("data-ready") || !form.getAttribute("data-trigger-run") ||
        form.getAttribute("data-state") === "closed") {
      return; // closed by the server: its run had finished when the page was rendered
    }
    form.setAttribute("data-ready", "");
    form.setAttribute("data-state", "ready");
  }

  function markAll(root) {
    if (root.matches && root.matches(FORM_SELECTOR)) {
      markReady(root);
    }
    if (root.querySelectorAll) {
      var forms = root.querySelectorAll(FORM_SELECTOR);
      for (var i = 0; i < forms.length; i++) {
        markReady(forms[i]);
      }
    }
  }

  // The element that shows the error in words: the form's own role="alert" element, or one
  // created right after the form when a custom template has none.
  function alertElement(form) {
    var element = form.querySelector("[data-trigger-error]");
    if (!element) {
      element = document.createElement("p");
      element.setAttribute("role", "alert");
      element.setAttribute("data-trigger-error", "");
      form.insertAdjacentElement("afterend", element);
    }
    return element;
  }

  function statusElement(form) {
    return form.querySelector("[data-trigger-status]");
  }

  function show(element, text) {
    if (!element) {
      return;
    }
    element.textContent = text;
    // A live region (role="status") stays in the page, empty, so that its changes are announced;
    // hiding it would take it out of the accessibility tree.
    element.hidden = !text && element.getAttribute("role") !== "status";
  }

  function csrfToken(form) {
    var input = form.querySelector("input[name=csrfmiddlewaretoken]");
    if (input && input.value) {
      return input.value;
    }
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function formBody(form, submitter) {
    var data;
    try {
      data = new FormData(form, submitter || undefined);
    } catch (error) {
      // A submitter that is not one of the form's submit buttons: send the form without it.
      data = new FormData(form);
    }
    return new URLSearchParams(data);
  }

  function describeFields(fields) {
    var lines = [];
    for (var name in fields) {
      if (Object.prototype.hasOwnProperty.call(fields, name)) {
        var label = name === "__all__" ? "" : name + ": ";
        lines.push(label + [].concat(fields[name]).join(" "));
      }
    }
    return lines.join("\n");
  }

  function detailBase(form) {
    return {
      runId: form.getAttribute("data-trigger-run"),
      streamId: form.getAttribute("data-trigger-input"),
    };
  }

  function emit(form, name, detail) {
    form.dispatchEvent(new CustomEvent(name, { bubbles: true, detail: detail }));
  }

  function finishSent(form, body) {
    form.removeAttribute("aria-busy");
    form.setAttribute("data-state", "sent");
    // Stay disabled: the input was delivered, and this form's key is spent.
    setDisabled(form, true);
    show(alertElement(form), "");
    var message = (body && body.message) || "Sent.";
    show(statusElement(form), message);
    var detail = detailBase(form);
    detail.data = body ? body.data : undefined;
    detail.message = message;
    emit(form, "trigger:sent", detail);
  }

  function finishError(form, status, message, fields) {
    form.removeAttribute("aria-busy");
    form.setAttribute("data-state", "error");
    setDisabled(form, false);
    var text = message;
    var fieldText = fields ? describeFields(fields) : "";
    if (fieldText) {
      text = message + "\n" + fieldText;
    }
    show(statusElement(form), "");
    show(alertElement(form), text);
    var detail = detailBase(form);
    detail.status = status;
    detail.message = message;
    detail.fields = fields || {};
    emit(form, "trigger:error", detail);
  }

  function readResponse(response) {
    var type = response.headers.get("Content-Type") || "";
    if (type.indexOf("application/json") !== -1) {
      return response.json().then(
        function (body) { return body; },
        function () { return null; }
      );
    }
    return Promise.resolve(null);
  }

  function describeStatus(response) {
    if (response.status === 403) {
      return "The server refused the request (403). Reload the page and try again.";
    }
    if (response.status === 401) {
      return "Your session has ended. Log in again and retry.";
    }
    if (response.ok) {
      return "The server sent an unexpected answer. Reload the page to see whether the input was sent.";
    }
    return "The server answered " + response.status + (response.statusText ? " " + response.statusText : "") + ".";
  }

  function send(form, submitter) {
    var body = formBody(form, submitter);
    form.setAttribute("data-state", "sending");
    form.setAttribute("aria-busy", "true");
    setDisabled(form, true);
    show(alertElement(form), "");
    show(statusElement(form), form.getAttribute("data-sending-message") || "Sending…");
    // getAttribute, not form.action: a field named "action" would shadow the property.
    fetch(form.getAttribute("action") || window.location.href, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: {
        "Accept": "application/json",
        "X-CSRFToken": csrfToken(form),
        "X-Requested-With": "fetch",
      },
    }).then(
      function (response) {
        return readResponse(response).then(function (json) {
          if (response.ok && json && json.ok) {
            finishSent(form, json);
          } else {
            var message = (json && json.error) || describeStatus(response);
            finishError(form, response.status, message, json && json.fields);
          }
        });
      },
      function () {
        finishError(form, 0, "Could not reach the server. Check your connection and try again.", null);
      }
    );
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (event.defaultPrevented || !form.matches || !form.matches(FORM_SELECTOR)) {
      return;
    }
    if (!form.hasAttribute("data-ready")) {
      return; // not enhanced: let the browser post it the plain way
    }
    event.preventDefault();
    if (form.getAttribute("data-state") !== "sending") {
      send(form, event.submitter);
    }
  });

  // The form follows its run (a hidden run subscription inside it, served by
  // trigger-django.js): once the run has finished, nothing can be sent to it any more.
  function close(form, run) {
    if (form.getAttribute("data-state") === "closed") {
      return;
    }
    setDisabled(form, true);
    form.setAttribute("data-state", "closed");
    form.setAttribute("aria-disabled", "true");
    show(statusElement(form), "This run has finished (" + run.label + "); it no longer accepts input.");
    emit(form, "trigger:closed", detailBase(form));
  }

  document.addEventListener("trigger:run", function (event) {
    var form = event.target.closest ? event.target.closest(FORM_SELECTOR) : null;
    var run = event.detail && event.detail.run;
    if (form && run && run.finished && form.getAttribute("data-state") !== "sent") {
      close(form, run);
    }
  });

  function start() {
    markAll(document);
    new MutationObserver(function (records) {
      for (var i = 0; i < records.length; i++) {
        var added = records[i].addedNodes;
        for (var j = 0; j < added.length; j++) {
          if (added[j].nodeType === 1) {
            markAll(added[j]);
          }
        }
      }
    }).observe(document.documentElement, { childList: true, subtree: true });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
