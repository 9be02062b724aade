namespace Potluck.Tests;

/// <summary>The repository root (the folder holding Node.sln) above the running test assembly. Linked into each test project.</summary>
internal static class RepositoryRoot
{
    private static readonly Lazy<string> Root = new(() =>
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(System.IO.Path.Combine(dir.FullName, "Node.sln")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("repository root (with Node.sln) not found above " + AppContext.BaseDirectory);
    });

    public static string FullPath => Root.Value;

    /// <summary>A path under the root, from its parts.</summary>
    public static string Combine(params string[] parts) => System.IO.Path.Combine([FullPath, .. parts]);
}
