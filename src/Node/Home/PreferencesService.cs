using Microsoft.Extensions.Logging;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Providing;

namespace Potluck.Node.Home;

/// <summary>
/// Applies the operator's preferences to a running provider: samples the machine every
/// <see cref="PreferencesOptions.SampleInterval"/> on the node's clock (<see cref="AvailabilityTracker"/>), pauses the
/// provider (no free core advertised, requests refused as busy, with the reason) when it must not work, and when it
/// stops working cancels running leases cleanly or lets them finish (<see cref="PreferencesOptions.OnOwnerReturn"/>);
/// closes connections of refused peers, or of peers not allowed when an allow list is set. Preferences can be replaced
/// while it runs (<see cref="Apply"/>).
/// </summary>
public sealed partial class PreferencesService : IAsyncDisposable
{
    private readonly IHost _host;
    private readonly ProviderService? _provider;
    private readonly IMachineProbe _probe;
    private readonly TimeProvider _time;
    private readonly BackgroundWork _work;
    private readonly ILogger<PreferencesService> _log;
    private readonly AvailabilityTracker _tracker;
    private readonly Lock _gate = new();
    private PreferencesOptions _prefs;
    private HashSet<PeerId> _refused = [];
    private HashSet<PeerId> _allowed = [];
    private ITimer? _timer;
    private bool _disposed;

    public PreferencesService(IHost host, ProviderService? provider, IMachineProbe probe, PreferencesOptions prefs, NodeRuntime runtime,
        TimeZoneInfo zone, ILogger<PreferencesService> log)
    {
        _host = host;
        _provider = provider;
        _probe = probe;
        _time = runtime.Time;
        _log = log;
        _prefs = prefs;
        _work = runtime.CreateBackgroundWork("preferences", log);
        _tracker = new AvailabilityTracker(prefs, zone, _time.GetUtcNow());
        SetPeers(prefs);
    }

    /// <summary>The availability last computed.</summary>
    public Availability Current
    {
        get
        {
            lock (_gate)
            {
                return _tracker.Current;
            }
        }
    }

    public PreferencesOptions Preferences
    {
        get
        {
            lock (_gate)
            {
                return _prefs;
            }
        }
    }

    /// <summary>Leases cancelled because the node had to stop working.</summary>
    public long LeasesCancelled { get; private set; }

    /// <summary>Leases this provider completed since the node started (what `potluck status` counts).</summary>
    public long LeasesCompleted => Interlocked.Read(ref _completed);

    private long _completed;

    private void OnLeaseEnded(PeerId requester, ulong id, Potluck.Scheduler.Leasing.LeaseOutcome outcome)
    {
        if (outcome.Kind == Potluck.Scheduler.Leasing.LeaseOutcomeKind.Completed)
        {
            Interlocked.Increment(ref _completed);
        }
    }

    /// <summary>Takes a first reading now and samples on the clock from then on.</summary>
    public void Start()
    {
        _host.Connected += OnConnected;
        if (_provider is not null)
        {
            _provider.LeaseEnded += OnLeaseEnded;
        }
        Sample();
        lock (_gate)
        {
            _timer = _time.CreateTimer(_ => Sample(), null, _prefs.SampleInterval, _prefs.SampleInterval);
        }
        foreach (var connection in _host.Connections)
        {
            OnConnected(connection);
        }
    }

    /// <summary>Replaces the preferences (validated by the caller); takes effect with a reading now.</summary>
    public void Apply(PreferencesOptions prefs)
    {
        lock (_gate)
        {
            _tracker.SetPreferences(prefs);
            var intervalChanged = prefs.SampleInterval != _prefs.SampleInterval;
            _prefs = prefs;
            SetPeers(prefs);
            if (intervalChanged)
            {
                _timer?.Change(prefs.SampleInterval, prefs.SampleInterval);
            }
        }
        Sample();
        foreach (var connection in _host.Connections)
        {
            OnConnected(connection);
        }
    }

    private void SetPeers(PreferencesOptions prefs)
    {
        _refused = prefs.RefusePeers.Select(PeerId.Parse).ToHashSet();
        _allowed = prefs.AllowPeers.Select(PeerId.Parse).ToHashSet();
    }

    /// <summary>Whether a peer may stay connected under the preferences.</summary>
    public bool Admits(PeerId peer)
    {
        lock (_gate)
        {
            return !_refused.Contains(peer) && (_allowed.Count == 0 || _allowed.Contains(peer));
        }
    }

    private void OnConnected(IConnection connection)
    {
        if (!Admits(connection.RemotePeer))
        {
            LogRefused(_log, connection.RemotePeer);
            _work.Run("close refused peer", async () => await connection.CloseAsync());
        }
    }

    /// <summary>Reads the machine and applies the result to the provider (called by the timer; tests may call it).</summary>
    public void Sample()
    {
        Availability before, after;
        OwnerReturnAction onReturn;
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }
            before = _tracker.Current;
            MachineReading? reading;
            try
            {
                reading = _probe.Read(askInputSources: _prefs.OnlyWhenIdle && _prefs.WatchInput);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
            {
                reading = null;
            }
            after = _tracker.Update(reading, _time.GetUtcNow());
            onReturn = _prefs.OnOwnerReturn;
        }
        if (_provider is null || (after.State == before.State && after.Reason == before.Reason))
        {
            return;
        }
        if (after.State == WorkState.Working)
        {
            if (before.State != WorkState.Working)
            {
                LogWorking(_log, after.Reason);
            }
            _provider.Resume();
            return;
        }
        var stopping = before.State == WorkState.Working;
        var cancelled = _provider.Pause(after.Reason, cancelRunning: stopping && onReturn == OwnerReturnAction.Cancel);
        if (stopping)
        {
            LeasesCancelled += cancelled;
            LogPaused(_log, after.Reason, cancelled);
        }
    }

    public async ValueTask DisposeAsync()
    {
        lock (_gate)
        {
            _disposed = true;
            _timer?.Dispose();
        }
        _host.Connected -= OnConnected;
        if (_provider is not null)
        {
            _provider.LeaseEnded -= OnLeaseEnded;
        }
        await _work.StopAsync();
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Working for others again: {Reason}")]
    private static partial void LogWorking(ILogger log, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Not working for others: {Reason} ({Cancelled} running leases cancelled)")]
    private static partial void LogPaused(ILogger log, string reason, int cancelled);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Closing a connection of {Peer}: refused by preferences:refusePeers/allowPeers")]
    private static partial void LogRefused(ILogger log, PeerId peer);
}
