"use strict";
// django-celery-beat's crontab help ("Translation: every 5 minutes"), moved from its inline
// script into a file: the Content-Security-Policy allows no inline script (docs/security.md).
{
  const data = document.getElementById("readable-crontabs");
  const select = document.getElementById("id_crontab");
  const help = document.querySelector(".field-crontab .help");
  if (data && select && help) {
    const readable = JSON.parse(data.textContent);
    const original = help.textContent;
    for (const row of document.querySelectorAll(".field-crontab_translation")) {
      row.hidden = true;
    }
    select.addEventListener("change", () => {
      help.textContent = original;
      help.append(document.createElement("br"), `Translation: ${readable[select.value] ?? ""}`);
    });
  }
}
