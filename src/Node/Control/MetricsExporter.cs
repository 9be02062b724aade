using System.Diagnostics.Metrics;
using Prometheus;

namespace Potluck.Node.Control;

/// <summary>
/// <c>/metrics</c>: the node's own instruments (<see cref="Protocol.Metrics.ProtocolInstruments"/>,
/// <see cref="Scheduler.Metrics.ComputeInstruments"/>, each on the node's meter factory) exported in the Prometheus text
/// format by prometheus-net, plus what the node knows that is not a counter (whether it works for others and why not,
/// cores offered, balance) and the process's CPU and memory. One registry per node: nothing is shared across nodes in a
/// process. A <see cref="MeterListener"/> of the node's two meters feeds prometheus-net's own types under the names
/// Prometheus users expect: a counter <c>potluck.leases.ended</c> is <c>potluck_leases_ended_total</c>, a unit of
/// seconds or bytes is in the name (<c>potluck_sandbox_duration_seconds</c>, <c>potluck_bytes_sent_bytes_total</c>), tags
/// are labels. (prometheus-net's own MeterAdapter prefixes the meter's name and turns counters into gauges.)
/// </summary>
public sealed class MetricsExporter : IDisposable
{
    private static readonly Lock DefaultsGate = new();
    private static bool _defaultsSuppressed;

    private readonly MeterListener _listener = new();
    private readonly HashSet<Meter> _meters;
    private readonly MetricFactory _factory;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<(Instrument, string), Collector> _metrics = new();

    public MetricsExporter(PotluckNode node)
    {
        lock (DefaultsGate)
        {
            if (!_defaultsSuppressed)
            {
                // prometheus-net's process-wide defaults would listen to every Meter of every node in the process.
                Metrics.SuppressDefaultMetrics(new SuppressDefaultMetricOptions
                {
                    SuppressMeters = true,
                    SuppressEventCounters = true,
                    SuppressDebugMetrics = true,
                    SuppressProcessMetrics = true,
                });
                _defaultsSuppressed = true;
            }
        }
        Registry = Metrics.NewCustomRegistry();
        _factory = Metrics.WithCustomRegistry(Registry);
        _meters = [node.ProtocolMetrics.Meter, node.ComputeMetrics.Meter];
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (_meters.Contains(instrument.Meter))
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((i, v, tags, _) => Record(i, v, tags));
        _listener.SetMeasurementEventCallback<int>((i, v, tags, _) => Record(i, v, tags));
        _listener.SetMeasurementEventCallback<double>((i, v, tags, _) => Record(i, v, tags));
        _listener.Start();
        DotNetStats.Register(Registry);

        var factory = _factory;
        var working = factory.CreateGauge("potluck_provider_working", "1 while the node takes leases for others; 0 when it is paused (see potluck_provider_state) or does not provide");
        var state = factory.CreateGauge("potluck_provider_state", "1 for the provider's state now: working, idle-paused, outside-hours, on-battery", "state");
        var cores = factory.CreateGauge("potluck_provider_cores_offered", "Cores offered to others");
        var inUse = factory.CreateGauge("potluck_provider_cores_in_use", "Cores held by leases now");
        var memory = factory.CreateGauge("potluck_provider_memory_offered_bytes", "Memory offered to others, in bytes");
        var diskUsed = factory.CreateGauge("potluck_provider_disk_bytes_used", "Bytes kept on disk for others now: modules and compiled modules (compute:provider:diskBytes)");
        var diskLimit = factory.CreateGauge("potluck_provider_disk_limit_bytes", "The disk limit for others' modules and compiled modules, in bytes (compute:provider:diskBytes)");
        var othersCpu = factory.CreateGauge("potluck_machine_others_cpu_ratio", "CPU used by everything but this node, as a share of the machine (0 to 1), at the last sample");
        var balance = factory.CreateGauge("potluck_ledger_balance_microcredits", "The node's credit balance, in micro-credits");
        var peers = factory.CreateGauge("potluck_peers_connected", "Peers with at least one open connection");
        string[] states = ["working", "idle-paused", "outside-hours", "on-battery"];
        Registry.AddBeforeCollectCallback(() =>
        {
            _listener.RecordObservableInstruments();
            var provider = node.Compute?.Provider;
            var availability = node.Preferences?.Current;
            var now = provider is null ? null : availability is null ? "working" : NodeControl.StateName(availability.State);
            working.Set(now == "working" ? 1 : 0);
            foreach (var s in states)
            {
                state.WithLabels(s).Set(s == now ? 1 : 0);
            }
            cores.Set(provider?.Capacity.Cores ?? 0);
            inUse.Set(provider?.Capacity.CoresInUse ?? 0);
            memory.Set(provider?.Capacity.MemoryBytes ?? 0);
            diskUsed.Set(node.Compute?.Disk.UsedBytes ?? 0);
            diskLimit.Set(node.Compute?.Disk.LimitBytes ?? 0);
            othersCpu.Set((availability?.OthersCpuPercent ?? 0) / 100);
            balance.Set(node.Compute?.Ledger.Balance() ?? 0);
            peers.Set(node.Host.Connections.Where(c => !c.IsClosed).Select(c => c.RemotePeer).Distinct().Count());
        });
    }

    public CollectorRegistry Registry { get; }

    /// <summary>Writes every metric in the Prometheus text format.</summary>
    public Task WriteAsync(Stream output, CancellationToken ct) => Registry.CollectAndExportAsTextAsync(output, ct);

    /// <summary>The Prometheus name of an instrument: dots to underscores, the unit (seconds, bytes) as a suffix, counters ending in _total.</summary>
    public static string NameOf(Instrument instrument)
    {
        var name = instrument.Name.Replace('.', '_').Replace('-', '_');
        var unit = instrument.Unit switch
        {
            "s" => "_seconds",
            "By" => "_bytes",
            "ms" => "_milliseconds",
            _ => "",
        };
        if (!name.EndsWith(unit, StringComparison.Ordinal))
        {
            name += unit;
        }
        return instrument is Counter<long> or Counter<int> or Counter<double> or ObservableCounter<long> or ObservableCounter<int> or ObservableCounter<double>
            ? name + "_total"
            : name;
    }

    private void Record(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        try
        {
            var sorted = tags.ToArray().OrderBy(t => t.Key, StringComparer.Ordinal).ToArray();
            var labelNames = sorted.Select(t => t.Key.Replace('.', '_').Replace('-', '_')).ToArray();
            var labelValues = sorted.Select(t => t.Value?.ToString() ?? "").ToArray();
            var key = (instrument, string.Join(",", labelNames));
            var help = instrument.Description ?? instrument.Name;
            switch (instrument)
            {
                case Counter<long> or Counter<int> or Counter<double>:
                    var counter = (Prometheus.Counter)_metrics.GetOrAdd(key, _ => _factory.CreateCounter(NameOf(instrument), help, labelNames));
                    counter.WithLabels(labelValues).Inc(value);
                    break;
                case ObservableCounter<long> or ObservableCounter<int> or ObservableCounter<double>:
                    var total = (Prometheus.Counter)_metrics.GetOrAdd(key, _ => _factory.CreateCounter(NameOf(instrument), help, labelNames));
                    total.WithLabels(labelValues).IncTo(value);
                    break;
                case ObservableGauge<long> or ObservableGauge<int> or ObservableGauge<double>
                    or ObservableUpDownCounter<long> or ObservableUpDownCounter<int> or ObservableUpDownCounter<double>:
                    var level = (Gauge)_metrics.GetOrAdd(key, _ => _factory.CreateGauge(NameOf(instrument), help, labelNames));
                    level.WithLabels(labelValues).Set(value);
                    break;
                case UpDownCounter<long> or UpDownCounter<int> or UpDownCounter<double>:
                    var gauge = (Gauge)_metrics.GetOrAdd(key, _ => _factory.CreateGauge(NameOf(instrument), help, labelNames));
                    gauge.WithLabels(labelValues).Inc(value);
                    break;
                case Histogram<double> or Histogram<long>:
                    var histogram = (Prometheus.Histogram)_metrics.GetOrAdd(key, _ => _factory.CreateHistogram(NameOf(instrument), help, labelNames,
                        new HistogramConfiguration { Buckets = instrument.Unit == "s" ? Buckets : Prometheus.Histogram.ExponentialBuckets(1, 4, 12) }));
                    histogram.WithLabels(labelValues).Observe(value);
                    break;
            }
        }
        catch (ArgumentException)
        {
            // One instrument recorded with two different sets of tags: prometheus-net keeps one set per name; the
            // first wins. Not worth failing a lease over.
        }
    }

    private static readonly double[] Buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

    public void Dispose() => _listener.Dispose();
}
