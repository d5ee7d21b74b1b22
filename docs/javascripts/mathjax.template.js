// MathJax 2.7 for the site (written into mathjax.js by docs/hooks.py).
// Markdown pages: pymdownx.arithmatex wraps math in <span class="arithmatex">\( .. \)</span>
// (display: \[ .. \]); this loads MathJax and typesets those. Tutorial pages load
// MathJax themselves (mkdocs-jupyter), with the same URL, before this runs.
(function () {
  var url = "@MATHJAX@", local = @LOCAL@;
  if (window.MathJax && window.MathJax.Hub) {            // a tutorial page: already loaded
    window.MathJax.Hub.Queue(["Typeset", window.MathJax.Hub]);
    return;
  }
  if (local) {                                           // relative to the site root
    var me = document.currentScript && document.currentScript.src;
    url = me ? me.replace(/javascripts\/mathjax\.js.*$/, url) : url;
  }
  window.MathJax = {
    tex2jax: {inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]],
              processEscapes: true, processClass: "arithmatex", ignoreClass: ".*"},
    messageStyle: "none",
    "HTML-CSS": {availableFonts: ["TeX"]},
  };
  var script = document.createElement("script");
  script.src = url + "?config=TeX-AMS_CHTML";
  document.head.appendChild(script);
})();
