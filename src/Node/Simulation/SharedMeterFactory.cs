using System.Diagnostics.Metrics;

namespace Potluck.Node.Simulation;

/// <summary>
/// The meters of the shared-counters stand-in (<see cref="Hosting.NodeStandIns.SharedCounters"/>): one meter per name and
/// version for every node of a mesh, so the nodes' counters with the same name are one instrument (a meter keeps one
/// instrument per name, kind, unit and description). Only counters, histograms and up-down counters are made on it: a
/// node's observable instruments call back into that node and stay on the node's own meter, which goes with the node
/// when it stops (on a shared meter they would outlive a crashed node and keep it alive). Disposed by the mesh.
/// </summary>
internal sealed class SharedMeterFactory : IMeterFactory
{
    private readonly Dictionary<(string Name, string? Version), Meter> _meters = [];
    private readonly Lock _gate = new();
    private bool _disposed;

    public Meter Create(MeterOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var key = (options.Name, options.Version);
            if (!_meters.TryGetValue(key, out var meter))
            {
                meter = new Meter(new MeterOptions(options.Name) { Version = options.Version, Tags = options.Tags, Scope = this });
                _meters[key] = meter;
            }
            return meter;
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
            foreach (var meter in _meters.Values)
            {
                meter.Dispose();
            }
            _meters.Clear();
        }
    }
}
