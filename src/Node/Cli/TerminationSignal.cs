using System.Runtime.InteropServices;

namespace Potluck.Node.Cli;

/// <summary>
/// Ctrl-C and SIGTERM for a short-lived command: the first cancels <see cref="Token"/> so the command can stop what it
/// is doing and say so; a second is left to the runtime, which ends the process (for a command that does not stop).
/// `potluck run` does not use this: the generic host's console lifetime stops the node.
/// </summary>
internal sealed class TerminationSignal : IDisposable
{
    private readonly CancellationTokenSource _cts = new();
    private readonly PosixSignalRegistration[] _registrations;
    private int _signals;

    public TerminationSignal()
    {
        _registrations = OperatingSystem.IsBrowser() || OperatingSystem.IsIOS() || OperatingSystem.IsTvOS() || OperatingSystem.IsAndroid()
            ? []
            : [PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal), PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal)];
    }

    /// <summary>Cancelled by the first Ctrl-C or SIGTERM.</summary>
    public CancellationToken Token => _cts.Token;

    private void OnSignal(PosixSignalContext context)
    {
        if (Interlocked.Increment(ref _signals) == 1)
        {
            context.Cancel = true;
            _cts.Cancel();
        }
    }

    public void Dispose()
    {
        foreach (var registration in _registrations)
        {
            registration.Dispose();
        }
        // _cts is not disposed: a signal arriving as this runs may still cancel it (it holds no timer).
    }
}
