using System.Diagnostics.Metrics;

namespace Potluck.Tests;

/// <summary>
/// Records what the instruments of one <see cref="Meter"/> measure (a node's <c>Potluck.Protocol</c> or
/// <c>Potluck.Compute</c> meter): only that meter's, so other nodes in the same process, each with its own meter, never
/// show up. Measurements from any thread; observable instruments are read by <see cref="Observe"/>.
/// </summary>
public sealed class MetricRecorder : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly Lock _gate = new();
    private readonly List<(string Instrument, double Value, KeyValuePair<string, object?>[] Tags)> _measurements = [];

    public MetricRecorder(Meter meter)
    {
        ArgumentNullException.ThrowIfNull(meter);
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (ReferenceEquals(instrument.Meter, meter))
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((i, v, tags, _) => Add(i, v, tags));
        _listener.SetMeasurementEventCallback<int>((i, v, tags, _) => Add(i, v, tags));
        _listener.SetMeasurementEventCallback<double>((i, v, tags, _) => Add(i, v, tags));
        _listener.Start();
    }

    private void Add(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var copy = tags.ToArray();
        lock (_gate)
        {
            _measurements.Add((instrument.Name, value, copy));
        }
    }

    /// <summary>Reads the observable instruments now.</summary>
    public void Observe() => _listener.RecordObservableInstruments();

    /// <summary>The sum of what <paramref name="instrument"/> measured with all of <paramref name="tags"/> (key=value each).</summary>
    public double Sum(string instrument, params string[] tags) => Values(instrument, tags).Sum();

    /// <summary>How many measurements <paramref name="instrument"/> made with all of <paramref name="tags"/> (for histograms).</summary>
    public int Count(string instrument, params string[] tags) => Values(instrument, tags).Count;

    /// <summary>Each value <paramref name="instrument"/> measured with all of <paramref name="tags"/> (key=value each), in order.</summary>
    public IReadOnlyList<double> Values(string instrument, params string[] tags)
    {
        var wanted = tags.Select(t => t.Split('=', 2)).Select(p => (Key: p[0], Value: p.Length > 1 ? p[1] : "")).ToArray();
        lock (_gate)
        {
            return _measurements
                .Where(m => m.Instrument == instrument
                    && wanted.All(w => m.Tags.Any(t => t.Key == w.Key && string.Equals(t.Value?.ToString(), w.Value, StringComparison.Ordinal))))
                .Select(m => m.Value)
                .ToList();
        }
    }

    /// <summary>Every instrument name that measured anything.</summary>
    public IReadOnlyCollection<string> Instruments()
    {
        lock (_gate)
        {
            return _measurements.Select(m => m.Instrument).Distinct().Order(StringComparer.Ordinal).ToList();
        }
    }

    public void Dispose() => _listener.Dispose();
}
