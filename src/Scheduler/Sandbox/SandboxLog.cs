using Microsoft.Extensions.Logging;

namespace Potluck.Scheduler.Sandbox;

internal static partial class SandboxLog
{
    [LoggerMessage(EventId = 3001, Level = LogLevel.Warning, Message = "Compiled-module cache entry for {ModuleSha256} rejected ({Reason}); recompiling")]
    public static partial void CacheEntryRejected(ILogger logger, string moduleSha256, string reason);

    [LoggerMessage(EventId = 3002, Level = LogLevel.Information, Message = "Compiled-module cache entry for {ModuleSha256} unreadable ({Error}); recompiling")]
    public static partial void CacheEntryUnreadable(ILogger logger, string moduleSha256, string error);

    [LoggerMessage(EventId = 3003, Level = LogLevel.Warning, Message = "Could not write compiled-module cache entry for {ModuleSha256} ({Error})")]
    public static partial void CacheWriteFailed(ILogger logger, string moduleSha256, string error);

    [LoggerMessage(EventId = 3005, Level = LogLevel.Warning, Message = "Sandbox instance pool: {Asked} slots asked, {Pooled} fit this process's address space (its limit, ulimit -v, or other sandboxes' pools; 0: runs map their memory as they go)")]
    public static partial void PoolReduced(ILogger logger, int asked, int pooled);

    [LoggerMessage(EventId = 3004, Level = LogLevel.Debug, Message = "Task {ModuleSha256} ended {Outcome} after {Fuel} fuel")]
    public static partial void RunFinished(ILogger logger, string moduleSha256, SandboxOutcome outcome, ulong fuel);
}
