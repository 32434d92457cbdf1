"""The page's own CSS (Gradio 6 takes it at launch): the grouped settings two abreast, gallery captions whole, and
what a phone (390 px) needs: the narrow runs table instead of the wide one, charts whose hidden cells take no room."""

PAGE_CSS = """
/* Train: a group's settings two abreast where there is room, one under the other on a phone. */
.settings-group .form { flex-direction: row; flex-wrap: wrap; }
.settings-group .form > .block { flex: 1 1 240px; }
/* Runs: a chart's cell (title, legend and plot) takes no room while the chart is hidden. */
.chart-cell:not(:has(.block)) { display: none; }
/* Runs: the compact table (run, status, reward, dataset) on a narrow screen, the full one elsewhere. */
@media (max-width: 720px) { #runs-table { display: none !important; } }
@media (min-width: 721px) { #runs-table-compact { display: none !important; } }
#runs-table-compact th, #runs-table-compact td, #runs-table-compact span {
  font-family: var(--font); font-size: var(--text-sm); word-break: normal; overflow-wrap: anywhere; }
/* Label, Data and Check: a gallery tile's caption whole (wrapped over the picture's foot), not cut at the file name. */
#label-gallery .caption-label, #dataset-gallery .caption-label, #check-gallery .caption-label {
  white-space: normal; max-width: 100%; }
@media (max-width: 720px) {
  #label-gallery .grid-container { --grid-cols: 1 !important; }
  #dataset-gallery .grid-container, #check-gallery .grid-container { --grid-cols: 2 !important; }
}
"""
