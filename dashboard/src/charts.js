// The dashboard's one third-party dependency, bundled into the package so
// that a pip-installed head serves it offline (docs/dashboard.md).
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

window.uPlot = uPlot;
